"""`labelprob loadtest`: closed- or open-loop load against a labelprob server, with an SLO verdict.

Closed loop: N callers, each sends its next request when the previous one answers.
Open loop: requests leave on a schedule (constant or Poisson arrivals) whether or not
earlier ones answered, and latency counts from the *scheduled* send time, so a slow
server cannot hide its queueing delay by slowing the sender (coordinated omission).

The pieces are small and pure where they can be (schedules, workload parsing, the
recorder, SLO evaluation, report building) so they test without a server;
`run_load(LoadConfig) -> LoadReport` is the async API a benchmark script can reuse.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import grpc
from hdrh.histogram import HdrHistogram

from labelprob.client.client import (
    CALIBRATIONS,
    DEFAULT_TARGET,
    MODES,
    ClassifyParams,
    channel_options,
)
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

EXIT_OK = 0
EXIT_ERROR = 1  # usage error, or nothing succeeded (no server, every request rejected)
EXIT_SLO_FAILED = 2
# Failures of a server that is up but too slow or shedding load: an SLO matter, not an error.
LOAD_SYMPTOMS = frozenset({"DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

ARRIVALS = ("constant", "poisson")
LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
# Per-second windows are reset every second: 2 digits (1%) is plenty for a plot and
# keeps the reset and percentile reads cheap on the event loop.
WINDOW_DIGITS = 2
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
PROGRESS_INTERVAL_S = 0.5
DEFAULT_DURATION_S = 10.0


# --- workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    """Texts to send, their true labels when known, and the candidate label set."""

    texts: list[str]
    truths: list[str | None]
    labels: list[str]
    source: str

    @property
    def labeled(self) -> bool:
        return any(t is not None for t in self.truths)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "texts": len(self.texts),
            "labels": self.labels,
            "labeled": self.labeled,
        }


def parse_jsonl_workload(
    lines: Iterable[str], labels: Sequence[str] | None = None, source: str = "<jsonl>"
) -> Workload:
    """Rows `{"text": ..., "label": ...}`; the label set is the file's sorted distinct labels
    unless `labels` is given."""
    texts: list[str] = []
    truths: list[str | None] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'{source}:{number}: expected an object with a "text" string')
        label = row.get("label")
        texts.append(row["text"])
        truths.append(None if label is None else str(label))
    if not texts:
        raise ValueError(f"{source}: no texts")
    label_set = list(labels) if labels else sorted({t for t in truths if t is not None})
    if not label_set:
        raise ValueError(f"{source}: rows have no labels; give --labels")
    return Workload(texts, truths, label_set, source)


def load_jsonl_workload(path: Path, labels: Sequence[str] | None = None) -> Workload:
    with path.open(encoding="utf-8") as stream:
        return parse_jsonl_workload(stream, labels, source=str(path))


# A word list reads better as one string than as a 57-line list literal.
WORDS = (  # noqa: SIM905
    "the service model label text request server latency reads prompt token queue "
    "customer order delivery payment refund account weather music alarm calendar news "
    "market team match film review great poor slow fast today tomorrow please again "
    "because although really quite never always with without about into over"
).split()


def generate_workload(count: int, labels: Sequence[str], seed: int = 0) -> Workload:
    """`count` synthetic texts of 6..40 words, reproducible from `seed`; no true labels."""
    if count < 1:
        raise ValueError("--generate needs at least 1 text")
    rng = random.Random(seed)
    texts = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))).capitalize() + "."
        for _ in range(count)
    ]
    return Workload(texts, [None] * count, list(labels), f"generated:{count}")


def shuffled(workload: Workload, seed: int) -> Workload:
    # Data files are often sorted by label; shuffling avoids long same-label runs.
    order = list(range(len(workload.texts)))
    random.Random(seed).shuffle(order)
    return Workload(
        [workload.texts[i] for i in order],
        [workload.truths[i] for i in order],
        workload.labels,
        workload.source,
    )


# --- arrival schedules ------------------------------------------------------------------------


def arrival_offsets(rate: float, arrival: str = "constant", seed: int = 0) -> Iterator[float]:
    """Endless send times in seconds from the start: first at 0, then every 1/rate
    (constant) or after exponential gaps of mean 1/rate (poisson, seeded)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if arrival == "constant":
        for i in itertools.count():
            yield i / rate
    elif arrival == "poisson":
        rng = random.Random(seed)
        t = 0.0
        while True:
            yield t
            t += rng.expovariate(rate)
    else:
        raise ValueError(f"unknown arrival {arrival!r}; one of {', '.join(ARRIVALS)}")


def schedule(
    rate: float,
    arrival: str = "constant",
    seed: int = 0,
    *,
    count: int | None = None,
    horizon_s: float | None = None,
) -> list[float]:
    """The first send times: at most `count`, all before `horizon_s`. One bound is required."""
    if count is None and horizon_s is None:
        raise ValueError("schedule needs a count or a horizon")
    times: list[float] = []
    for t in arrival_offsets(rate, arrival, seed):
        if (count is not None and len(times) >= count) or (
            horizon_s is not None and t >= horizon_s
        ):
            break
        times.append(t)
    return times


# --- statistics -------------------------------------------------------------------------------


def new_histogram(digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def to_us(seconds: float) -> int:
    return min(max(round(seconds * 1e6), LOWEST_US), HIGHEST_US)


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


# --- config, SLOs and the report --------------------------------------------------------------


@dataclass
class LoadConfig:
    """One load test. Closed loop unless `rate` is set; stops after `duration_s` or
    `requests` measured requests, whichever comes first (at least one is required)."""

    target: str
    workload: Workload
    concurrency: int = 1
    rate: float | None = None
    arrival: str = "constant"
    max_outstanding: int = 1000
    warmup_s: float = 0.0
    duration_s: float | None = None
    requests: int | None = None
    batch_size: int = 1
    mode: str = "auto"
    calibration: str = "default"
    instruction: str = ""
    template: str = ""
    timeout_s: float = 30.0
    channels: int = 1
    seed: int = 0
    progress: bool = False
    slo_p99_ms: float | None = None
    slo_error_rate: float | None = None

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def validate(self) -> None:
        """Raises ValueError naming the first bad setting."""
        checks = [
            (len(set(self.workload.labels)) >= 2, "need at least 2 distinct labels"),
            (self.workload.texts != [], "the workload has no texts"),
            (self.concurrency >= 1, "--concurrency must be >= 1"),
            (self.rate is None or self.rate > 0, "--rate must be > 0"),
            (self.arrival in ARRIVALS, f"--arrival must be one of {', '.join(ARRIVALS)}"),
            (self.max_outstanding >= 1, "--max-outstanding must be >= 1"),
            (self.warmup_s >= 0, "--warmup must be >= 0"),
            (self.duration_s is not None or self.requests is not None,
             "give --duration or --requests"),
            (self.duration_s is None or self.duration_s > 0, "--duration must be > 0"),
            (self.requests is None or self.requests >= 1, "--requests must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.mode in MODES, f"--mode must be one of {', '.join(sorted(MODES))}"),
            (self.calibration in CALIBRATIONS,
             f"--calibration must be one of {', '.join(sorted(CALIBRATIONS))}"),
            (self.timeout_s > 0, "--timeout must be > 0"),
            (self.channels >= 1, "--channels must be >= 1"),
            (self.slo_p99_ms is None or self.slo_p99_ms > 0, "--slo-p99-ms must be > 0"),
            (self.slo_error_rate is None or 0 <= self.slo_error_rate <= 1,
             "--slo-error-rate must be in [0, 1]"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "loop": "open" if self.open_loop else "closed",
            "concurrency": None if self.open_loop else self.concurrency,
            "rate": self.rate,
            "arrival": self.arrival if self.open_loop else None,
            "max_outstanding": self.max_outstanding if self.open_loop else None,
            "warmup_s": self.warmup_s,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "batch_size": self.batch_size,
            "mode": self.mode,
            "calibration": self.calibration,
            "instruction": self.instruction,
            "template": self.template,
            "timeout_s": self.timeout_s,
            "channels": self.channels,
            "seed": self.seed,
            "slo_p99_ms": self.slo_p99_ms,
            "slo_error_rate": self.slo_error_rate,
            "workload": self.workload.describe(),
        }


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
        time_series=series,
    )
    report.slo = evaluate_slos(
        report.latency_ms["p99"],
        report.error_rate,
        slo_p99_ms=config.slo_p99_ms,
        slo_error_rate=config.slo_error_rate,
    )
    return report


# --- running the load -------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A ready request message and the true labels of its texts."""

    message: pb.ClassifyRequest | pb.ClassifyBatchRequest
    truths: tuple[str | None, ...]


def prepare_requests(config: LoadConfig) -> list[Prepared]:
    """One message per distinct request; the run cycles through them. Batches take the next
    K texts, wrapping around, so the cycle is n / gcd(n, K) batches long."""
    workload, k = config.workload, config.batch_size
    params = ClassifyParams(
        labels=workload.labels,
        instruction=config.instruction,
        options=pb.ScoringOptions(
            mode=MODES[config.mode],
            calibration=CALIBRATIONS[config.calibration],
            template=config.template,
        ),
    )
    n = len(workload.texts)
    if k == 1:
        return [
            Prepared(params.request(t), (y,))
            for t, y in zip(workload.texts, workload.truths, strict=True)
        ]
    prepared = []
    for b in range(n // math.gcd(n, k)):
        idx = [(b * k + j) % n for j in range(k)]
        message = params.batch_request(workload.texts[i] for i in idx)
        prepared.append(Prepared(message, tuple(workload.truths[i] for i in idx)))
    return prepared


def score(results: Sequence[pb.Classification], truths: Sequence[str | None]) -> tuple[int, int]:
    """(correct, labeled) of results against the true labels that are known."""
    pairs = [(r.top_label, y) for r, y in zip(results, truths, strict=False) if y is not None]
    return sum(top == y for top, y in pairs), len(pairs)


class _Run:
    """State of one run: the clock, the tickets, the outstanding requests."""

    def __init__(self, config: LoadConfig, stubs: list[pb_grpc.ClassifierServiceStub]) -> None:
        self.config = config
        self.stubs = stubs
        self.requests = prepare_requests(config)
        self.recorder = Recorder()
        self.t0 = time.perf_counter()
        self.measure_start = self.t0 + config.warmup_s
        self.measure_end = (
            None if config.duration_s is None else self.measure_start + config.duration_s
        )
        self.sequence = itertools.count()
        self.measured_sent = 0
        self.inflight = 0

    def since_start(self, now: float) -> float:
        return now - self.measure_start

    def measured_budget_left(self, now: float) -> bool:
        if self.measure_end is not None and now >= self.measure_end:
            return False
        return self.config.requests is None or self.measured_sent < self.config.requests

    def next_ticket(self) -> bool | None:
        """Closed loop: whether the next request is measured, or None when the run is over."""
        now = time.perf_counter()
        if now < self.measure_start:
            return False
        if not self.measured_budget_left(now):
            return None
        self.measured_sent += 1
        return True

    async def send(
        self, stub: pb_grpc.ClassifierServiceStub, measured: bool, scheduled: float
    ) -> None:
        prepared = self.requests[next(self.sequence) % len(self.requests)]
        timeout = self.config.timeout_s
        self.inflight += 1
        results: Sequence[pb.Classification] = ()
        usage = pb.Usage()
        try:
            if isinstance(prepared.message, pb.ClassifyBatchRequest):
                batch = await stub.ClassifyBatch(prepared.message, timeout=timeout)
                results, usage = batch.results, batch.usage
            else:
                single = await stub.Classify(prepared.message, timeout=timeout)
                results, usage = (single.result,), single.result.usage
            status = "OK"
        except grpc.aio.AioRpcError as err:
            status = err.code().name
        finally:
            self.inflight -= 1
        done = time.perf_counter()
        if not measured:
            self.recorder.warmup_requests += 1
            return
        correct, labeled = score(results, prepared.truths)
        self.recorder.record(
            self.since_start(done),
            done - scheduled,
            status,
            texts=len(prepared.truths),
            correct=correct,
            labeled=labeled,
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
        )

    async def closed_loop(self) -> None:
        async def caller(stub: pb_grpc.ClassifierServiceStub) -> None:
            while (measured := self.next_ticket()) is not None:
                await self.send(stub, measured, time.perf_counter())

        stubs = [self.stubs[i % len(self.stubs)] for i in range(self.config.concurrency)]
        await asyncio.gather(*(caller(stub) for stub in stubs))

    async def open_loop(self) -> None:
        config = self.config
        assert config.rate is not None
        tasks: set[asyncio.Task[None]] = set()
        offsets = arrival_offsets(config.rate, config.arrival, config.seed)
        for i, offset in enumerate(offsets):
            due = self.t0 + offset
            measured = due >= self.measure_start
            if measured and not self.measured_budget_left(due):
                break
            # Always yield, even when behind schedule, so responses keep being processed.
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if measured:
                self.measured_sent += 1
            if len(tasks) >= config.max_outstanding:
                if measured:
                    self.recorder.record_drop(self.since_start(time.perf_counter()))
                continue
            task = asyncio.create_task(self.send(self.stubs[i % len(self.stubs)], measured, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def progress_line(self) -> str:
        now = time.perf_counter()
        rec = self.recorder
        if now < self.measure_start:
            phase = f"warmup {now - self.t0:5.1f}/{self.config.warmup_s:g}s"
        else:
            total = "" if self.config.duration_s is None else f"/{self.config.duration_s:g}"
            phase = f"run {self.since_start(now):6.1f}{total}s"
        row = rec.last_row()
        recent = ""
        if row is not None and row["p99_ms"] is not None:
            recent = f"  last-second p99 {row['p99_ms']:.1f} ms, {row['requests']} req/s"
        return (
            f"{phase}  ok {rec.ok}  err {rec.completed - rec.ok}  dropped {rec.dropped}  "
            f"inflight {self.inflight}{recent}"
        )

    async def show_progress(self) -> None:
        """Rewrites one stderr line in place until cancelled."""
        width = 0
        try:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL_S)
                line = self.progress_line()
                sys.stderr.write("\r" + line.ljust(width))
                sys.stderr.flush()
                width = len(line)
        finally:
            sys.stderr.write("\r" + " " * width + "\r")
            sys.stderr.flush()


async def server_info(stub: pb_grpc.ClassifierServiceStub, timeout: float) -> dict[str, Any] | None:
    """The served model, if the server answers; also opens the connection before the clock."""
    try:
        info = await stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout)
    except grpc.aio.AioRpcError:
        return None
    return {
        "model": info.model,
        "server_version": info.server_version,
        "engine_version": info.engine_version,
    }


async def run_load(config: LoadConfig) -> LoadReport:
    """Runs one load test and returns its report. Raises ValueError on a bad config;
    RPC failures are counted by status code, never raised."""
    config.validate()
    # A local subchannel pool gives each channel its own connection; by default
    # channels with equal arguments would share one.
    options = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(config.target, options=options) for _ in range(config.channels)
    ]
    try:
        stubs = [pb_grpc.ClassifierServiceStub(ch) for ch in channels]
        infos = await asyncio.gather(*(server_info(s, min(config.timeout_s, 5.0)) for s in stubs))
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        run = _Run(config, stubs)
        progress = asyncio.create_task(run.show_progress()) if config.progress else None
        try:
            await (run.open_loop() if config.open_loop else run.closed_loop())
        finally:
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    return build_report(config, run.recorder, started_at=started_at, server=infos[0])


# --- output -----------------------------------------------------------------------------------


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


def write_plots(report: LoadReport, directory: Path) -> list[Path]:
    """latency_over_time.png (per-second p50/p99) and latency_percentiles.png (latency by
    percentile on a 1/(1-p) axis). Needs matplotlib (the `plots` extra)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator

    directory.mkdir(parents=True, exist_ok=True)
    over_time, percentiles = (
        directory / "latency_over_time.png",
        directory / "latency_percentiles.png",
    )

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    rows = report.time_series
    t = [row["t_s"] for row in rows]
    for key, name in [("p50_ms", "p50"), ("p99_ms", "p99")]:
        ax.plot(
            t, [math.nan if row[key] is None else row[key] for row in rows], marker=".", label=name
        )
    ax.set(
        xlabel="time since measurement start (s)",
        ylabel="latency (ms)",
        title="Latency per second (OK responses)",
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.savefig(over_time, dpi=100, bbox_inches="tight")

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
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
    figure.savefig(percentiles, dpi=100, bbox_inches="tight")
    return [over_time, percentiles]


# --- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default=DEFAULT_TARGET, help="server address host:port")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=Path, help='JSONL workload: {"text": ..., "label": ...}')
    source.add_argument("--generate", type=int, metavar="N", help="N synthetic texts")
    parser.add_argument(
        "--labels",
        "-l",
        nargs="+",
        help="candidate labels (default with --input: the file's labels)",
    )
    parser.add_argument("--instruction", "-i", default="", help="task instruction")
    parser.add_argument("--template", default="", help="server prompt template name")
    parser.add_argument("--mode", choices=sorted(MODES), default="auto")
    parser.add_argument("--calibration", choices=sorted(CALIBRATIONS), default="default")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="K",
        help="texts per request; K > 1 uses ClassifyBatch",
    )
    parser.add_argument("--shuffle", action="store_true", help="shuffle the input file's rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffle/generate/poisson")

    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="closed loop: N callers, each waits for its answer (default)",
    )
    load.add_argument(
        "--rate",
        type=float,
        metavar="R",
        help="open loop: R requests/s on schedule, whatever the answers",
    )
    parser.add_argument(
        "--arrival", choices=ARRIVALS, default="constant", help="open-loop send times"
    )
    parser.add_argument(
        "--max-outstanding",
        type=int,
        default=1000,
        metavar="M",
        help="open loop: requests in flight before new ones are dropped",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send but do not record for this long first",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help=f"measure this long (default {DEFAULT_DURATION_S:g} s unless --requests)",
    )
    parser.add_argument("--requests", type=int, metavar="N", help="measure N requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per request (s)")
    parser.add_argument(
        "--channels",
        type=int,
        default=1,
        metavar="C",
        help="spread callers over C channels (connections)",
    )
    parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="write PNG latency plots")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="live progress on stderr even when it is not a terminal",
    )
    parser.add_argument("--slo-p99-ms", type=float, metavar="X", help="SLO: p99 <= X ms")
    parser.add_argument(
        "--slo-error-rate", type=float, metavar="F", help="SLO: failed+dropped share <= F"
    )


DESCRIPTION = (
    "Closed-loop (--concurrency) or open-loop (--rate) load on a labelprob server. Exit 0 "
    "when the SLOs held, 2 when one failed, 1 on a usage or connection error."
)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_ERROR)


def _configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    # argparse exits 2 on a usage error, but 2 means "SLO failed" here.
    parser.error = lambda message: _usage_error(parser, message)  # type: ignore[method-assign]
    parser.set_defaults(run=run_loadtest)


def add_command(commands: argparse._SubParsersAction) -> None:
    """Registers `loadtest` on the `labelprob` command's subparsers."""
    _configure(
        commands.add_parser(
            "loadtest",
            help="load-test a server: latency percentiles, throughput, SLO exit code",
            description=DESCRIPTION,
        )
    )


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    if args.input is not None:
        workload = load_jsonl_workload(args.input, args.labels)
    else:
        if not args.labels:
            raise ValueError("--generate needs --labels")
        workload = generate_workload(args.generate, args.labels, args.seed)
    if args.shuffle:
        workload = shuffled(workload, args.seed)
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    return LoadConfig(
        target=args.target,
        workload=workload,
        concurrency=args.concurrency,
        rate=args.rate,
        arrival=args.arrival,
        max_outstanding=args.max_outstanding,
        warmup_s=args.warmup,
        duration_s=duration,
        requests=args.requests,
        batch_size=args.batch_size,
        mode=args.mode,
        calibration=args.calibration,
        instruction=args.instruction,
        template=args.template,
        timeout_s=args.timeout,
        channels=args.channels,
        seed=args.seed,
        progress=args.progress or sys.stderr.isatty(),
        slo_p99_ms=args.slo_p99_ms,
        slo_error_rate=args.slo_error_rate,
    )


def run_loadtest(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        config.validate()
    except (OSError, ValueError) as exc:
        print(f"labelprob loadtest: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = asyncio.run(run_load(config))
    print(format_summary(report))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.plots is not None:
        write_plots(report, args.plots)
    if report.ok == 0:
        print("labelprob loadtest: error: no request succeeded", file=sys.stderr)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """`labelprob loadtest` on its own; argv are the command's arguments."""
    parser = argparse.ArgumentParser(prog="labelprob loadtest", description=DESCRIPTION)
    _configure(parser)
    return run_loadtest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
