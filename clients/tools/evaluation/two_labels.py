"""How two-label tasks are pooled: leave-one-dataset-out over the two-label sets alone.

With two labels the direct read is read in both label orders by default (README, "Two
labels"). This scan chose that, and the pool's channel weight and temperature: for each
two-label set held out in turn, the direct read (one order or the mean of both, each
contextually calibrated), the channel's weight (scale / ln(tokens + 1)) and the temperature
of lowest log-loss on the other two-label sets are scored on it. Rows come from
``selection collect --reversed``.

    python -m labelprob.tools.evaluation.two_labels scores.jsonl...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labelprob.server import scoring
from labelprob.tools.evaluation.collect import BOTH_ORDERS, Row, rows_by_set
from labelprob.tools.evaluation.selection import (
    accuracy,
    scores_calibration_error,
    scores_log_loss,
)
from labelprob.tools.reports import text_table

ORDERS = ("one order", "both orders")
SCALES = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0, 1.5, 2.0)
TEMPERATURES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.8)


@dataclass(frozen=True)
class Choice:
    orders: str
    weights: scoring.PoolWeights

    @property
    def name(self) -> str:
        w = self.weights
        return f"{self.orders}, channel {w.channel_scale:g} / ln(n + 1), T {w.temperature:g}"


CHOICES = tuple(
    Choice(orders, scoring.PoolWeights(scale, t))
    for orders in ORDERS
    for scale in SCALES
    for t in TEMPERATURES
)


def pooled(row: Row, choice: Choice) -> list[float]:
    direct = row.calibrated
    if choice.orders == "both orders":
        direct = row.layouts[BOTH_ORDERS]["calibrated"]
    return scoring.combined_scores(direct, row.channel, row.tokens, choice.weights)


def log_loss(rows: Sequence[Row], choice: Choice) -> float:
    return scores_log_loss(rows, [pooled(r, choice) for r in rows])


def held_out_table(by_set: dict[str, list[Row]]) -> list[list[str]]:
    """Per two-label set: the choice best on the others, its accuracy and ECE there, the
    one-order pool's (the pool of three labels or more) and the peer's accuracy."""
    losses = {c: {n: log_loss(rows, c) for n, rows in by_set.items()} for c in CHOICES}
    one_order = Choice("one order", scoring.ONE_ORDER_POOL)
    out = []
    for held, rows in by_set.items():
        best = min(CHOICES, key=lambda c: sum(v for n, v in losses[c].items() if n != held))
        scores = [pooled(r, best) for r in rows]
        ece = scores_calibration_error(rows, scores)
        out.append([held, best.name, f"{accuracy(rows, scores):.1f}", f"{ece:.3f}",
                    f"{accuracy(rows, [pooled(r, one_order) for r in rows]):.1f}",
                    f"{accuracy(rows, [r.peer for r in rows]):.1f}"])  # fmt: skip
    overall = min(CHOICES, key=lambda c: sum(losses[c].values()))
    out.append(["(all sets)", overall.name, "", "", "", ""])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelprob.tools.evaluation.two_labels")
    parser.add_argument(
        "scores", nargs="+", type=Path, help="rows of `selection collect --reversed`"
    )
    args = parser.parse_args(argv)
    by_set = rows_by_set(args.scores, lambda r: len(r.labels) == 2)
    if len(by_set) < 2:
        parser.error("need the rows of two two-label sets or more")
    header = ["held out", "best on the others", "accuracy", "ECE", "one-order pool", "peer"]
    print(text_table(header, held_out_table(by_set)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
