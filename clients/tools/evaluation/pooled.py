"""Accuracy and ECE over several `labelprob eval` reports of one set, their texts pooled.

An ECE over 200 texts has a floor of 0.04 to 0.07 (README, "Accuracy"), too coarse to judge a
target of 0.08; the selection rows (200 and on for some sets) break a set's report rows
into ranges that one `--skip`/`--limit` cannot take. Each report's texts are matched to
their truths by reloading its data file with the report's own sample (rows, seed, cut), and
pooled per (model, data set, config); a row in two reports is an error, not counted twice.

    python -m labelprob.tools.evaluation.pooled rows0.json rows300.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelprob.tools.evaluation.datasets import load_dataset
from labelprob.tools.evaluation.metrics import calibrated_ece, expected_calibration_error
from labelprob.tools.reports import text_table


@dataclass
class Pool:
    """The texts of one (model, data set, config) across reports."""

    confidences: list[float] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    rows: set[int] = field(default_factory=set)


def report_runs(report: dict[str, Any]) -> list[dict[str, Any]]:
    """A report of one server, or of several (`--target` repeated: {"runs": [...]})."""
    return report.get("runs", [report])


def truths_of(dataset: dict[str, Any]) -> list[str]:
    """The truths of a report's data set, in the report's per-text order."""
    sample = dataset["sample"]
    data = load_dataset(
        Path(dataset["source"]),
        limit=sample["limit"],
        seed=sample["seed"],
        skip=sample.get("skip", 0),
        max_chars=sample["max_chars"],
    )
    if data.indices != dataset["row_indices"]:
        raise ValueError(f"{dataset['source']} no longer holds the rows of the report")
    return data.truths


def pool_reports(reports: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], Pool]:
    pools: dict[tuple[str, str, str], Pool] = {}
    for report in reports:
        for run in report_runs(report):
            datasets = {d["name"]: d for d in run["datasets"]}
            truths = {name: truths_of(d) for name, d in datasets.items()}
            for result in run["results"]:
                dataset = datasets[result["dataset"]]
                key = (run["server"]["model"], result["dataset"], result["config"])
                pool = pools.setdefault(key, Pool())
                rows = set(dataset["row_indices"])
                if rows & pool.rows:
                    raise ValueError(f"{key}: rows in more than one report")
                pool.rows |= rows
                per_text = result["per_text"]
                answers = zip(per_text["predicted"], truths[result["dataset"]], strict=True)
                pool.confidences += per_text["confidence"]
                pool.correct += [p == t for p, t in answers]
    return pools


def pooled_table(pools: dict[tuple[str, str, str], Pool]) -> list[list[str]]:
    out = []
    for (model, dataset, config), pool in pools.items():
        n = len(pool.correct)
        out.append([
            model, dataset, config, str(n),
            f"{100 * sum(pool.correct) / n:.1f}",
            f"{sum(pool.confidences) / n:.3f}",
            f"{expected_calibration_error(pool.confidences, pool.correct):.3f}",
            f"{calibrated_ece(pool.confidences):.3f}",
        ])  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelprob.tools.evaluation.pooled")
    parser.add_argument("reports", nargs="+", type=Path, help="`labelprob eval --report` files")
    args = parser.parse_args(argv)
    try:
        pools = pool_reports([json.loads(p.read_text()) for p in args.reports])
    except ValueError as exc:
        parser.error(str(exc))
    header = ["model", "data set", "config", "texts", "accuracy %", "confidence", "ECE", "floor"]
    print(text_table(header, pooled_table(pools)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
