"""The load-test report: aggregates, SLO checks, exit code and the printed summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labelprob.tools.latency import PERCENTILES, latency_summary_ms, percentile_distribution
from labelprob.tools.loadtest.config import LoadConfig
from labelprob.tools.loadtest.recorder import Recorder

EXIT_OK = 0
EXIT_ERROR = 1  # usage error, or nothing succeeded (no server, every request rejected)
EXIT_SLO_FAILED = 2
# Failures of a server that is up but too slow or shedding load: an SLO matter, not an error.
LOAD_SYMPTOMS = frozenset({"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})


@dataclass
class SloCheck:
    name: str
    limit: float
    actual: float | None
    passed: bool


def evaluate_slos(
    p99_ms: float | None,
    error_rate: float | None,
    *,
    slo_p99_ms: float | None = None,
    slo_error_rate: float | None = None,
) -> list[SloCheck]:
    """One check per SLO given. A value that could not be measured fails its SLO."""
    checks = []
    if slo_p99_ms is not None:
        passed = p99_ms is not None and p99_ms <= slo_p99_ms
        checks.append(SloCheck("p99_ms", slo_p99_ms, p99_ms, passed))
    if slo_error_rate is not None:
        passed = error_rate is not None and error_rate <= slo_error_rate
        checks.append(SloCheck("error_rate", slo_error_rate, error_rate, passed))
    return checks


def exit_code_for(status_codes: Mapping[str, int], checks: Sequence[SloCheck]) -> int:
    """0: every SLO given held; 2: one failed; 1: no request succeeded, because the server
    could not be reached or rejected them all, or no SLO was given to judge a slow server."""
    if not status_codes.get("OK"):
        overloaded = not LOAD_SYMPTOMS.isdisjoint(status_codes)
        return EXIT_SLO_FAILED if overloaded and checks else EXIT_ERROR
    return EXIT_SLO_FAILED if any(not c.passed for c in checks) else EXIT_OK


@dataclass
class LoadReport:
    config: dict[str, Any]
    started_at: str
    server: dict[str, Any] | None
    elapsed_s: float
    warmup_requests: int
    completed: int
    ok: int
    dropped: int
    status_codes: dict[str, int]
    texts_ok: int
    latency_ms: dict[str, float | None]
    distribution: list[dict[str, float]]
    correct: int
    labeled: int
    prompt_tokens: int
    cached_prompt_tokens: int
    engine_reads: int
    time_series: list[dict[str, Any]]
    slo: list[SloCheck] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.completed + self.dropped

    @property
    def error_rate(self) -> float | None:
        """Share of measured requests that failed or were dropped client-side."""
        if self.attempted == 0:
            return None
        return (self.attempted - self.ok) / self.attempted

    @property
    def requests_per_s(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def texts_per_s(self) -> float:
        return self.texts_ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.status_codes, self.slo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "started_at": self.started_at,
            "server": self.server,
            "elapsed_s": self.elapsed_s,
            "requests": {
                "completed": self.completed,
                "ok": self.ok,
                "errors": self.completed - self.ok,
                "dropped": self.dropped,
                "warmup": self.warmup_requests,
                "error_rate": self.error_rate,
            },
            "status_codes": self.status_codes,
            "throughput": {
                "requests_per_s": self.requests_per_s,
                "texts_per_s": self.texts_per_s,
            },
            "latency_ms": self.latency_ms,
            "latency_distribution": self.distribution,
            "accuracy": None
            if self.accuracy is None
            else {"accuracy": self.accuracy, "correct": self.correct, "labeled": self.labeled},
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens,
                "engine_reads": self.engine_reads,
            },
            "time_series": self.time_series,
            "slo": {
                "checks": [vars(c) for c in self.slo],
                "passed": all(c.passed for c in self.slo),
            },
            "exit_code": self.exit_code,
        }


def build_report(
    config: LoadConfig,
    recorder: Recorder,
    *,
    started_at: str = "",
    server: dict[str, Any] | None = None,
) -> LoadReport:
    series = recorder.finish()
    report = LoadReport(
        config=config.describe(),
        started_at=started_at,
        server=server,
        elapsed_s=recorder.last_event_s,
        warmup_requests=recorder.warmup_requests,
        completed=recorder.completed,
        ok=recorder.ok,
        dropped=recorder.dropped,
        status_codes=dict(recorder.status_codes.most_common()),
        texts_ok=recorder.texts_ok,
        latency_ms=latency_summary_ms(recorder.latency),
        distribution=percentile_distribution(recorder.latency),
        correct=recorder.correct,
        labeled=recorder.labeled,
        prompt_tokens=recorder.prompt_tokens,
        cached_prompt_tokens=recorder.cached_prompt_tokens,
        engine_reads=recorder.engine_reads,
        time_series=series,
    )
    report.slo = evaluate_slos(
        report.latency_ms["p99"],
        report.error_rate,
        slo_p99_ms=config.slo_p99_ms,
        slo_error_rate=config.slo_error_rate,
    )
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_summary(report: LoadReport) -> str:
    """The human-readable table printed at the end of a run."""
    c = report.config
    if c["loop"] == "open":
        load = f"open loop, {c['rate']:g} req/s {c['arrival']}, max {c['max_outstanding']} out"
    else:
        load = f"closed loop, {c['concurrency']} callers"
    lat = report.latency_ms
    rows = [
        ("target", f"{c['target']} ({c['channels']} channel(s))"),
        ("load", load),
        ("workload", f"{c['workload']['source']}, {len(c['workload']['labels'])} labels, "
                     f"batch {c['batch_size']}, mode {c['mode']}"),
        ("measured", f"{report.elapsed_s:.2f} s after {c['warmup_s']:g} s warmup "
                     f"({report.warmup_requests} warmup requests)"),
        ("requests", f"{report.completed} completed, {report.ok} ok, {report.dropped} dropped"),
        ("status codes", ", ".join(f"{k} {v}" for k, v in report.status_codes.items()) or "-"),
        ("error rate", "-" if report.error_rate is None else f"{report.error_rate:.2%}"),
        ("throughput", f"{report.requests_per_s:.1f} req/s, {report.texts_per_s:.1f} texts/s"),
        ("latency ms", "  ".join(f"{k} {_ms(lat[k])}" for k in [*PERCENTILES, "max", "mean"])),
        ("accuracy", "-" if report.accuracy is None
                     else f"{report.accuracy:.2%} of {report.labeled} labeled texts"),
        ("prompt tokens", f"{report.prompt_tokens} ({report.cached_prompt_tokens} cached)"),
    ]  # fmt: skip
    for check in report.slo:
        actual = "-" if check.actual is None else f"{check.actual:.4g}"
        verdict = "PASS" if check.passed else "FAIL"
        rows.append((f"SLO {check.name}", f"{verdict}: {actual} <= {check.limit:g}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
