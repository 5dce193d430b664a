"""A contender's measured row, the median of its rounds and the throughput table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from labelprob.tools.bench.cpu import Cpu
from labelprob.tools.reports import number, text_table


@dataclass
class Result:
    contender: str
    texts: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    note: str = ""
    cpu: Cpu | None = None

    @property
    def per_s(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per_text(self, part: str) -> float | None:
        seconds = getattr(self.cpu, f"{part}_s", None)
        if seconds is None or not self.texts:
            return None
        return seconds * 1000 / self.texts


def median_result(rounds: Sequence[Result]) -> Result:
    """A contender's rounds as one row: median throughput and latencies, summed CPU."""
    ordered = sorted(rounds, key=lambda r: r.per_s)
    mid = ordered[len(ordered) // 2]
    p50s = [r.p50_ms for r in rounds if r.p50_ms is not None]
    p99s = [r.p99_ms for r in rounds if r.p99_ms is not None]
    texts = sum(r.texts for r in rounds)
    cpu = None
    if all(r.cpu is not None for r in rounds):
        callers = [r.cpu.caller_s for r in rounds]  # type: ignore[union-attr]
        cpu = Cpu(
            sum(r.cpu.front_s for r in rounds),  # type: ignore[union-attr]
            sum(r.cpu.engine_s for r in rounds),  # type: ignore[union-attr]
            None if None in callers else sum(callers),  # type: ignore[arg-type]
        )
    per_round = ", ".join(f"{r.per_s:.1f}" for r in rounds)
    return Result(
        mid.contender,
        texts,
        texts / mid.per_s if mid.per_s else 0.0,  # seconds at the median rate
        statistics.median_high(p50s) if p50s else None,
        statistics.median_high(p99s) if p99s else None,
        sum(r.errors for r in rounds),
        f"{mid.note}; rounds/s: {per_round}" if len(rounds) > 1 else mid.note,
        cpu,
    )


def throughput_table(results: Sequence[Result]) -> str:
    base = next((r.per_s for r in results if r.contender.startswith("labelprob")), None)
    rows = [
        [
            r.contender,
            str(r.texts),
            number(r.seconds, 2),
            number(r.per_s, 2),
            number(r.p50_ms),
            number(r.p99_ms),
            f"{r.per_s / base:.2f}x" if base else "-",
            number(r.cpu_ms_per_text("front")),
            number(r.cpu_ms_per_text("engine")),
            number(r.cpu_ms_per_text("caller")),
            str(r.errors),
            r.note,
        ]
        for r in results
    ]
    headers = ["contender", "texts", "seconds", "classif/s", "p50 ms", "p99 ms", "vs labelprob",
               "front CPU ms/text", "engine CPU ms/text", "caller CPU ms/text", "errors",
               "note"]  # fmt: skip
    return text_table(headers, rows)
