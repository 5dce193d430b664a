"""Latency plots of a load-test report (matplotlib, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from labelprob.tools.loadtest.report import LoadReport
from labelprob.tools.plotting import new_figure, save


def write_plots(report: LoadReport, directory: Path) -> list[Path]:
    """latency_over_time.png (per-second p50/p99) and latency_percentiles.png (latency by
    percentile on a 1/(1-p) axis)."""
    return [
        save(over_time_figure(report), directory / "latency_over_time.png"),
        save(percentiles_figure(report), directory / "latency_percentiles.png"),
    ]


def over_time_figure(report: LoadReport) -> Figure:
    figure = new_figure(8, 4.5)
    ax = figure.add_subplot()
    rows = report.time_series
    t = [row["t_s"] for row in rows]
    for key, name in [("p50_ms", "p50"), ("p99_ms", "p99")]:
        values = [math.nan if row[key] is None else row[key] for row in rows]
        ax.plot(t, values, marker=".", label=name)
    ax.set(
        xlabel="time since measurement start (s)",
        ylabel="latency (ms)",
        title="Latency per second (OK responses)",
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def percentiles_figure(report: LoadReport) -> Figure:
    figure = new_figure(8, 4.5)
    ax = figure.add_subplot()
    # 1/(1-p) spreads the tail: 90%, 99%, 99.9% are equally spaced; 100% is at infinity.
    points = [p for p in report.distribution if p["percentile"] < 100.0]
    ax.plot(
        [1 / (1 - p["percentile"] / 100) for p in points],
        [p["latency_ms"] for p in points],
        marker=".",
    )
    if report.latency_ms["max"] is not None:
        ax.axhline(report.latency_ms["max"], color="grey", linestyle="--", label="max")
        ax.legend()
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_xlim(left=1)
    ax.set(xlabel="percentile", ylabel="latency (ms)", title="Latency by percentile")
    ax.grid(alpha=0.3)
    return figure
