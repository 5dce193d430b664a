"""Is one temperature right for every task? Leave-one-dataset-out over the temperature of the
server's pool of three labels or more (README, "One temperature for every task").

For each data set held out in turn (on every model whose rows are given: a model's rows are
named ``<model>:<set>``, and ``<set>`` is held out on all models at once), the temperature of
lowest log-loss on the other sets is scored on it: its ECE there, beside the ECE at the
server's temperature and at the set's own best one (in sample: what no label-free choice
can know). The pool is the server's (the online direct read plus the channel, as ``scan``
replays it), so only its temperature varies. Rows come from ``selection collect``.

    python -m labelprob.tools.evaluation.temperatures scores.jsonl...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from labelprob.server import scoring
from labelprob.tools.evaluation.collect import Row, rows_by_set
from labelprob.tools.evaluation.selection import (
    online_calibrated,
    scores_calibration_error,
    scores_log_loss,
)
from labelprob.tools.reports import text_table

TEMPERATURES = tuple(round(0.8 + 0.1 * i, 1) for i in range(23))  # 0.8 to 3.0
MIN_LABELS = 3  # two labels have a pool and a temperature of their own (two_labels.py)


def held_out_name(set_name: str) -> str:
    """The data set a model's rows belong to: ``qwen:bbc_news`` and ``bbc_news`` are one."""
    return set_name.rsplit(":", 1)[-1]


def untempered(rows: Sequence[Row]) -> list[list[float]]:
    """The server's one-order pool of each row at temperature 1 (rows in the order sent)."""
    pool = scoring.PoolWeights(scoring.ONE_ORDER_POOL.channel_scale, 1.0)
    return [scoring.combined_scores(r.online, r.channel, r.tokens, pool) for r in rows]


def tempered(scores: Sequence[Sequence[float]], temperature: float) -> list[list[float]]:
    return [[s / temperature for s in row] for row in scores]


def held_out_table(by_set: dict[str, list[Row]]) -> list[list[str]]:
    """Per set (per model): the temperature best on the other data sets, and the ECE there
    at it, at the server's temperature and at the set's own best."""
    rows = {name: online_calibrated(set_rows) for name, set_rows in by_set.items()}
    scores = {name: untempered(set_rows) for name, set_rows in rows.items()}
    loss = {
        (name, t): scores_log_loss(rows[name], tempered(scores[name], t))
        for name in rows
        for t in TEMPERATURES
    }

    def ece(name: str, t: float) -> str:
        return f"{scores_calibration_error(rows[name], tempered(scores[name], t)):.3f}"

    server_t = scoring.ONE_ORDER_POOL.temperature
    out = []
    for name in rows:
        others = [n for n in rows if held_out_name(n) != held_out_name(name)]
        picked = min(TEMPERATURES, key=lambda t: sum(loss[n, t] for n in others))
        own = min(TEMPERATURES, key=lambda t: loss[name, t])
        out.append([name, str(len(rows[name])), f"{picked:g}", ece(name, picked),
                    ece(name, server_t), f"{own:g}", ece(name, own)])  # fmt: skip
    overall = min(TEMPERATURES, key=lambda t: sum(loss[n, t] for n in rows))
    out.append(["(all sets)", "", f"{overall:g}", "", "", "", ""])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelprob.tools.evaluation.temperatures")
    parser.add_argument("scores", nargs="+", type=Path, help="rows of `selection collect`")
    args = parser.parse_args(argv)
    by_set = rows_by_set(args.scores, lambda r: len(r.labels) >= MIN_LABELS)
    if len({held_out_name(n) for n in by_set}) < 2:
        parser.error("need the rows of two data sets of three labels or more")
    server_t = f"ECE at T {scoring.ONE_ORDER_POOL.temperature:g}"
    header = ["held out", "texts", "T on the others", "ECE", server_t, "own best T", "ECE"]
    print(text_table(header, held_out_table(by_set)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
