"""Leave-one-dataset-out selection of how the direct read and the noisy channel are pooled.

How the server's default pool was chosen, reproducible: each selection text's per-label
scores are collected once from a running server (collect.py: the direct read's raw and
contextually calibrated log-probs, and the channel's), then every pool is scored offline.
A pool adds the direct read (raw, contextually calibrated, or calibrated online as the
server's AUTO does: see ``online_calibrated``) and ``weight`` times the channel log-prob:
summed over the text's tokens, or divided by the square root of their number, by the log
of their number plus one, or by their number; the sum is divided by a temperature. Each data set is
held out in turn: the pool best on the others is reported on it, beside the faithful peer
row. Best by ``nll`` (the default): the pool and temperature of lowest mean log-loss on the
others, a proper score that rewards being right and being sure only when right; by
``margin``: the largest smallest gain over the peer; by ``mean``: the mean accuracy (the
temperature then fitted by log-loss). Use rows the report does not (``--skip``).

    python -m labelprob.tools.evaluation.selection collect DATA.jsonl... --out scores.jsonl
        # --layouts a,b: other prompt layouts' direct reads; --reversed: the labels listed
        # in reverse, and the mean of both orders (each printed pooled by `scan`)
    python -m labelprob.tools.evaluation.selection scan scores.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from labelprob.client.client import DEFAULT_TARGET
from labelprob.server import scoring
from labelprob.server.classify.task_prior import PriorKey, TaskPriors
from labelprob.server.classify.types import LabelSpec, Task
from labelprob.server.labels import Mode
from labelprob.server.scoring import LengthNorm
from labelprob.tools.evaluation.collect import (
    BOTH_ORDERS,
    REVERSED,
    Collection,
    Row,
    collect_rows,
    read_rows,
)
from labelprob.tools.evaluation.metrics import expected_calibration_error
from labelprob.tools.reports import text_table

WEIGHTS = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
CHANNEL_NORMS = ("sum", "sqrt", "log", "mean")
TEMPERATURES = (1.0, 1.4, 2.0, 2.8, 4.0)
DIRECT_READS = ("raw", "calibrated", "online")


def online_calibrated(
    rows: Sequence[Row], strength: float = scoring.ONLINE_PRIOR_STRENGTH
) -> list[Row]:
    """Each row calibrated online as the server's AUTO does with the channel: against the
    prior of the rows of the same labels before it (in file order, as the texts were sent),
    from three labels on; contextually calibrated otherwise."""
    priors = TaskPriors()
    out = []
    for r in rows:
        online = r.calibrated
        if len(r.labels) >= scoring.MIN_LABELS_FOR_ONLINE_PRIOR:
            key = PriorKey(Task(tuple(LabelSpec(n) for n in r.labels)), Mode.FULL,
                           LengthNorm.SUM, None, r.dataset)  # fmt: skip
            online = priors.snapshot(key).calibrated(r.direct, r.calibrated, strength)
            priors.record(key, [r.direct])
        out.append(replace(r, online=online))
    return out


@dataclass(frozen=True)
class Pool:
    direct: str  # one of DIRECT_READS
    norm: str
    weight: float

    @property
    def name(self) -> str:
        return f"{self.direct} direct + {self.weight:g} x channel/{self.norm}"


POOLS = tuple(
    Pool(direct, norm, weight)
    for direct in DIRECT_READS
    for norm in CHANNEL_NORMS
    for weight in WEIGHTS
    if weight > 0 or norm == "sum"  # without the channel its norm cannot matter
)


def channel_divisor(norm: str, tokens: int) -> float:
    n = max(tokens, 1)
    return {"sum": 1.0, "sqrt": math.sqrt(n), "log": math.log(n + 1), "mean": float(n)}[norm]


def pooled(row: Row, pool: Pool, temperature: float = 1.0) -> list[float]:
    direct = {"raw": row.direct, "calibrated": row.calibrated, "online": row.online}[pool.direct]
    weight = pool.weight / channel_divisor(pool.norm, row.tokens)
    return [(d + weight * c) / temperature for d, c in zip(direct, row.channel, strict=True)]


def top(scores: Sequence[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)


def accuracy(rows: Sequence[Row], scores: Sequence[Sequence[float]]) -> float:
    right = sum(r.labels[top(s)] == r.truth for r, s in zip(rows, scores, strict=True))
    return 100.0 * right / len(rows)


def pool_accuracy(rows: Sequence[Row], pool: Pool) -> float:
    return accuracy(rows, [pooled(r, pool) for r in rows])


def scores_log_loss(rows: Sequence[Row], scores: Sequence[Sequence[float]]) -> float:
    """Mean -log P(truth) under each row's softmax of its scores."""
    total = 0.0
    for r, s in zip(rows, scores, strict=True):
        total += scoring.logsumexp(s) - s[r.labels.index(r.truth)]
    return total / len(rows)


def scores_calibration_error(rows: Sequence[Row], scores: Sequence[Sequence[float]]) -> float:
    """The ECE of each row's top label under the softmax of its scores."""
    confidences, correct = [], []
    for r, s in zip(rows, scores, strict=True):
        probabilities = scoring.softmax(s)
        confidences.append(max(probabilities))
        correct.append(r.labels[top(probabilities)] == r.truth)
    return expected_calibration_error(confidences, correct) or 0.0


def log_loss(rows: Sequence[Row], pool: Pool, temperature: float) -> float:
    """Mean -log P(truth) under the pool's distribution."""
    return scores_log_loss(rows, [pooled(r, pool, temperature) for r in rows])


def calibration_error(rows: Sequence[Row], pool: Pool, temperature: float) -> float:
    return scores_calibration_error(rows, [pooled(r, pool, temperature) for r in rows])


def leave_one_out(
    by_set: dict[str, list[Row]],
    by: str = "nll",
    online_strength: float = scoring.ONLINE_PRIOR_STRENGTH,
) -> list[list[str]]:
    """Per held-out set: the pool (and temperature) best on the others, its held-out
    accuracy and ECE, and the peer's accuracy."""
    by_set = {name: online_calibrated(rows, online_strength) for name, rows in by_set.items()}
    table = {p: {name: pool_accuracy(rows, p) for name, rows in by_set.items()} for p in POOLS}
    # Each set's log-loss under every pool and temperature, computed once for all folds.
    losses = {
        (p, t): {name: log_loss(rows, p, t) for name, rows in by_set.items()}
        for p in POOLS
        for t in TEMPERATURES
    }
    peer = {name: accuracy(rows, [r.peer for r in rows]) for name, rows in by_set.items()}
    out = []
    for held, held_rows in by_set.items():
        others = [name for name in by_set if name != held]

        def training_loss(pool: Pool, t: float, others: list[str] = others) -> float:
            """Each training set weighs the same."""
            return sum(losses[pool, t][n] for n in others)

        if by == "nll":
            best, temperature = min(losses, key=lambda key: training_loss(*key))
        else:

            def merit(pool: Pool, others: list[str] = others) -> float:
                if by == "mean":
                    return sum(table[pool][n] for n in others)
                return min(table[pool][n] - peer[n] for n in others)

            best = max(POOLS, key=merit)
            temperature = min(TEMPERATURES, key=lambda t: training_loss(best, t))
        ece = calibration_error(held_rows, best, temperature)
        out.append([held, best.name, f"{temperature:g}", f"{table[best][held]:.1f}",
                    f"{ece:.3f}", f"{peer[held]:.1f}"])  # fmt: skip
    return out


SHORTLISTS = (1, 2, 4, 8, 16, 32)


def with_shortlist(row: Row, size: int) -> list[float]:
    """The server's pool of the row's online direct read and its channel, the channel read
    only for the direct read's ``size`` best labels (the others imputed as the server does)."""
    read = {i: row.channel[i] for i in scoring.shortlist(row.online, size)}
    channel = scoring.impute_unread(read, len(row.labels))
    return scoring.combined_scores(row.online, channel, row.tokens)


def shortlist_table(by_set: dict[str, list[Row]]) -> list[list[str]]:
    """Per channel shortlist size and set: accuracy % (ECE) of the server's pool."""
    by_set = {name: online_calibrated(rows) for name, rows in by_set.items()}
    longest = max(len(r.labels) for rows in by_set.values() for r in rows)
    out = []
    for size in [s for s in SHORTLISTS if s < longest] + [longest]:
        cells = []
        for rows in by_set.values():
            scores = [with_shortlist(r, size) for r in rows]
            ece = scores_calibration_error(rows, scores)
            cells.append(f"{accuracy(rows, scores):.1f} ({ece:.3f})")
        out.append([str(size) if size < longest else "every label", *cells])
    return out


def layout_table(by_set: dict[str, list[Row]]) -> list[list[str]]:
    """Per prompt layout and set: the server's pool (labelprob.server.scoring) of that
    layout's calibrated direct read and the channel, and its raw direct read alone."""
    names = sorted({name for rows in by_set.values() for r in rows for name in r.layouts})
    out = [["peer", *(f"{accuracy(rows, [r.peer for r in rows]):.1f}" for rows in by_set.values())]]
    for name in names:
        for kind in ("calibrated", "raw"):
            cells = []
            for rows in by_set.values():
                kept = [r for r in rows if name in r.layouts]
                direct = [r.layouts[name][kind] for r in kept]
                scores = direct if kind == "raw" else [
                    scoring.combined_scores(ds, r.channel, r.tokens)
                    for ds, r in zip(direct, kept, strict=True)
                ]  # fmt: skip
                cells.append(f"{accuracy(kept, scores):.1f}" if kept else "")
            pool = "the server's pool" if kind == "calibrated" else "raw direct"
            out.append([f"{name}: {pool}", *cells])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelprob.tools.evaluation.selection")
    steps = parser.add_subparsers(dest="step", required=True)
    collect = steps.add_parser("collect", help="per-label scores of selection rows, as JSONL")
    collect.add_argument("datasets", nargs="+", type=Path)
    collect.add_argument("--out", type=Path, required=True)
    collect.add_argument("--target", default=DEFAULT_TARGET)
    collect.add_argument("--tokenizer", help="model folder (default: the embedded model)")
    collect.add_argument("--skip", type=int, default=200, help="rows the report uses")
    collect.add_argument("--limit", type=int, default=40)
    collect.add_argument("--max-chars", type=int, default=600)
    collect.add_argument("--concurrency", type=int, default=4)
    collect.add_argument(
        "--layouts",
        default="",
        help="comma list of server template names whose direct reads are collected too "
        "(e.g. those of layouts.toml, served with --templates-file)",
    )
    collect.add_argument(
        "--reversed",
        action="store_true",
        help=f"also read the labels listed in reverse, as the layouts '{REVERSED}' and "
        f"'{BOTH_ORDERS}' (the mean of the two orders)",
    )
    scan = steps.add_parser("scan", help="leave-one-dataset-out over the pools")
    scan.add_argument("scores", type=Path)
    scan.add_argument(
        "--by",
        choices=("nll", "margin", "mean"),
        default="nll",
        help="a pool's merit on the training sets: its mean log-loss (with its temperature), "
        "its smallest gain over the peer, or its mean accuracy",
    )
    scan.add_argument(
        "--online-strength",
        type=float,
        default=scoring.ONLINE_PRIOR_STRENGTH,
        help="online calibration's weight on the task prior after n texts is n / (n + this)",
    )
    scan.add_argument(
        "--shortlists",
        action="store_true",
        help="also print the default pool with the channel read for the direct read's N best "
        "labels only, for several N",
    )
    args = parser.parse_args(argv)
    if args.step == "scan":
        by_set = read_rows(args.scores)
        if len(by_set) > 1:  # a held-out set needs others to choose on
            rows = leave_one_out(by_set, args.by, args.online_strength)
            header = ["held out", "best pool on the others", "temperature", "accuracy", "ECE"]
            print(text_table([*header, "peer"], rows))
        if args.shortlists:
            print()
            print(text_table(["channel shortlist", *by_set], shortlist_table(by_set)))
        if any(r.layouts for rows in by_set.values() for r in rows):
            print()
            print(text_table(["layout: pool", *by_set], layout_table(by_set)))
        return 0
    from transformers import AutoTokenizer

    from labelprob.server.model_source import default_cache_dir, ensure_embedded_model

    folder = args.tokenizer or str(ensure_embedded_model(default_cache_dir()))
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    spec = Collection(args.target, args.datasets, count_tokens, args.limit, args.skip,
                      args.max_chars, args.concurrency, layouts, args.reversed)  # fmt: skip
    rows = asyncio.run(collect_rows(spec))
    args.out.write_text("".join(json.dumps(vars(r)) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
