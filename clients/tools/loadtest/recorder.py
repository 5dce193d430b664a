"""The recorder of measured outcomes: latency histogram, counters, per-second rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

from labelprob.tools.latency import latency_summary_ms, new_histogram, to_us

# Per-second windows are reset every second: 2 digits (1%) is plenty for a plot and
# keeps the reset and percentile reads cheap on the event loop.
WINDOW_DIGITS = 2


class Recorder:
    """Aggregates the measured outcomes: one histogram of OK latencies for the whole run,
    counters, and per-second rows (by completion time) for the time series.

    Times are seconds since the start of measurement. Events arrive in time order, as
    they do from one event loop; a late one is counted in the current second.
    """

    def __init__(self) -> None:
        self.latency = new_histogram()
        self.status_codes: Counter[str] = Counter()
        self.dropped = 0
        self.warmup_requests = 0
        self.texts_ok = 0
        self.correct = 0
        self.labeled = 0
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        self.engine_reads = 0
        self.last_event_s = 0.0
        self.series: list[dict[str, Any]] = []
        self._window = new_histogram(WINDOW_DIGITS)
        self._second = 0
        self._row = Counter[str]()

    @property
    def completed(self) -> int:
        return sum(self.status_codes.values())

    @property
    def ok(self) -> int:
        return self.status_codes["OK"]

    def record(
        self,
        at_s: float,
        latency_s: float,
        status: str,
        *,
        texts: int = 1,
        correct: int = 0,
        labeled: int = 0,
        prompt_tokens: int = 0,
        cached_prompt_tokens: int = 0,
        engine_reads: int = 0,
    ) -> None:
        self._advance(at_s)
        self.status_codes[status] += 1
        self._row["requests"] += 1
        if status != "OK":
            self._row["errors"] += 1
            return
        # Latency of successful requests only: fast failures would flatter the percentiles.
        self.latency.record_value(to_us(latency_s))
        self._window.record_value(to_us(latency_s))
        self._row["ok"] += 1
        self.texts_ok += texts
        self.correct += correct
        self.labeled += labeled
        self.prompt_tokens += prompt_tokens
        self.cached_prompt_tokens += cached_prompt_tokens
        self.engine_reads += engine_reads

    def record_drop(self, at_s: float) -> None:
        self._advance(at_s)
        self.dropped += 1
        self._row["dropped"] += 1

    def last_row(self) -> dict[str, Any] | None:
        return self.series[-1] if self.series else None

    def finish(self) -> list[dict[str, Any]]:
        """Closes the current second and returns the time series."""
        if self._row or not self.series:
            self._close_second()
        return self.series

    def _advance(self, at_s: float) -> None:
        self.last_event_s = max(self.last_event_s, at_s)
        second = max(int(at_s), 0)
        while self._second < second:
            self._close_second()
            self._second += 1

    def _close_second(self) -> None:
        window = latency_summary_ms(self._window)
        self.series.append(
            {
                "t_s": self._second,
                "requests": self._row["requests"],
                "ok": self._row["ok"],
                "errors": self._row["errors"],
                "dropped": self._row["dropped"],
                "p50_ms": window["p50"],
                "p99_ms": window["p99"],
                "max_ms": window["max"],
            }
        )
        if self._window.get_total_count():
            self._window.reset()
        self._row.clear()
