"""Latency statistics on HDR histograms: microsecond values, summaries in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def new_histogram(digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def to_us(seconds: float) -> int:
    return min(max(round(seconds * 1e6), LOWEST_US), HIGHEST_US)


def histogram_of(seconds: Iterable[float]) -> HdrHistogram:
    histogram = new_histogram()
    for value in seconds:
        histogram.record_value(to_us(value))
    return histogram


def latency_summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50/p90/p99/p99.9, max, mean, min and stddev in ms; None when nothing was recorded."""
    keys = [*PERCENTILES, "max", "mean", "min", "stddev"]
    if histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {
        name: histogram.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES.items()
    }
    out["max"] = histogram.get_max_value() / 1000
    out["mean"] = histogram.get_mean_value() / 1000
    out["min"] = histogram.get_min_value() / 1000
    out["stddev"] = histogram.get_stddev() / 1000
    return out


def percentile_distribution(histogram: HdrHistogram, ticks: int = 5) -> list[dict[str, float]]:
    """(percentile, latency ms) points, denser towards the tail, as HdrHistogram prints them."""
    if histogram.get_total_count() == 0:
        return []
    return [
        {
            "percentile": item.percentile_level_iterated_to,
            "latency_ms": item.value_iterated_to / 1000,
        }
        for item in histogram.get_percentile_iterator(ticks)
    ]
