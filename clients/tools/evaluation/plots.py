"""Reliability diagrams and confusion matrices (matplotlib, no pyplot state)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from labelprob.tools.evaluation.metrics import ECE_BINS
from labelprob.tools.evaluation.report import EvalReport, percent
from labelprob.tools.evaluation.results import ConfigResult
from labelprob.tools.plotting import new_figure, save


def file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "dataset"


def write_plots(report: EvalReport, directory: Path) -> list[Path]:
    """Per dataset: `<name>_reliability.png` (accuracy against confidence per bin, one line
    per config, the diagonal, bin counts below) and `<name>_confusion.png` for the best
    config."""
    written: list[Path] = []
    for info in report.datasets:
        name = info["name"]
        mine = [r for c in report.configs if (r := report.result(name, c)) is not None]
        stem = directory / file_stem(name)
        written.append(save(reliability_figure(name, mine), Path(f"{stem}_reliability.png")))
        best = report.best_config(name)
        if best is not None:
            written.append(save(confusion_figure(name, best), Path(f"{stem}_confusion.png")))
    return written


def reliability_figure(name: str, results: Sequence[ConfigResult]) -> Figure:
    figure = new_figure(7.5, 7)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    width = 1 / ECE_BINS / (len(results) + 1)
    for k, r in enumerate(results):
        filled = [b for b in r.reliability if b["count"]]
        ece = "-" if r.ece is None else f"{r.ece:.3f}"
        (line,) = top.plot(
            [b["confidence"] for b in filled],
            [b["accuracy"] for b in filled],
            marker="o",
            label=f"{r.config} (acc {percent(r.accuracy)}%, ECE {ece})",
        )
        bottom.bar(
            [b["lo"] + (k + 1) * width for b in r.reliability],
            [b["count"] for b in r.reliability],
            width=width,
            color=line.get_color(),
        )
    top.set(
        ylabel="accuracy",
        title=f"{name}: reliability ({ECE_BINS} bins on the top-label probability)",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    bottom.set(xlabel="confidence (top-label probability)", ylabel="texts")
    bottom.grid(alpha=0.3)
    return figure


def confusion_figure(name: str, best: ConfigResult) -> Figure:
    labels = best.labels
    n = len(labels)
    side = min(max(5.0, 0.22 * n + 3), 20.0)
    figure = new_figure(side + 1, side)
    ax = figure.add_subplot()
    # Colour is the share of each true label (rows sum to 1), so rare labels show as
    # clearly as common ones; the numbers are counts.
    shares = [[c / (sum(row) or 1) for c in row] for row in best.confusion]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true label")
    font = 8 if n <= 20 else 6
    upright = n <= 8 and max(map(len, labels)) <= 10
    ax.set_xticks(range(n), labels, rotation=0 if upright else 90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    if n <= 15:
        for i, row in enumerate(best.confusion):
            for j, count in enumerate(row):
                colour = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{name}: {best.config} (accuracy {percent(best.accuracy)}%)",
    )
    return figure
