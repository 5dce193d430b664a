"""Running the load: closed or open loop over gRPC, `run_load(config) -> LoadReport`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from labelprob.client.client import CALIBRATIONS, MODES, ClassifyParams, channel_options
from labelprob.client.params import METHODS
from labelprob.tools.loadtest.config import LoadConfig
from labelprob.tools.loadtest.recorder import Recorder
from labelprob.tools.loadtest.report import LoadReport, build_report
from labelprob.tools.loadtest.schedule import arrival_offsets
from labelprob.tools.server_info import describe_server
from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc

PROGRESS_INTERVAL_S = 0.5


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
            method=METHODS[config.method],
            template=config.template,
            channel_shortlist=config.channel_shortlist,
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
            engine_reads=usage.engine_reads,
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
    return describe_server(info)


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
