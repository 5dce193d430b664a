"""How each contender is measured: labelprob, vLLM offline, vLLM HTTP, transformers."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelprob.server.labels import Read
from labelprob.tools.bench.cpu import Cpu, cpu_meter
from labelprob.tools.bench.plan import Plan
from labelprob.tools.bench.processes import Child, run_worker, worker_command
from labelprob.tools.bench.results import Result
from labelprob.tools.bench.settings import REQUEST_TIMEOUT_S, SERVED_NAME
from labelprob.tools.latency import histogram_of, latency_summary_ms, new_histogram, to_us
from labelprob.tools.loadtest.config import LoadConfig
from labelprob.tools.loadtest.runner import run_load
from labelprob.tools.loadtest.workload import Workload

VLLM_HTTP = "vLLM HTTP /generative_scoring"


def labelprob_load(
    target: str, plan: Plan, workload: Workload, concurrency: int, batch_size: int
) -> LoadConfig:
    return LoadConfig(
        target=target,
        workload=workload,
        concurrency=concurrency,
        requests=-(-len(workload.texts) // batch_size),  # each text once
        batch_size=batch_size,
        mode=plan.mode.value,
        calibration="none",
        timeout_s=REQUEST_TIMEOUT_S,
    )


def bench_labelprob(
    target: str,
    pgid: int,
    plan: Plan,
    measured: Workload,
    prompts: Sequence[Sequence[int]],
    concurrency: int,
    batch_size: int = 1,
) -> Result:
    """One closed-loop run over ``measured`` (whose prompt ids are ``prompts``)."""
    with cpu_meter(pgid, caller=True) as cpu:
        report = asyncio.run(
            run_load(labelprob_load(target, plan, measured, concurrency, batch_size))
        )
    # The server's usage shows whether it was sent the prompts the other contenders get.
    expected = plan.prompt_tokens(prompts)
    note = f"closed loop, {concurrency} callers"
    if batch_size > 1:
        note += f", ClassifyBatch of {batch_size} texts"
    if report.ok == report.completed and report.prompt_tokens != expected:
        note += f"; PROMPTS DIFFER: server {report.prompt_tokens} tokens, plan {expected}"
    return Result(
        "labelprob gRPC",
        report.texts_ok,
        report.elapsed_s,
        report.latency_ms["p50"],
        report.latency_ms["p99"],
        report.completed - report.ok,
        note,
        cpu,
    )


def read_body(plan: Plan, prompts: Sequence[Sequence[int]], read: Read) -> dict[str, Any]:
    """The route builds query + item: the task prefix is the query, each text's rest an item."""
    return {
        "model": SERVED_NAME,
        "query": list(prompts[0][: plan.prefix_len]),
        "items": [[*prompt[plan.prefix_len :], *read.prefix] for prompt in prompts],
        "label_token_ids": list(read.candidates),
        "apply_softmax": False,
    }


def batched(prompts: Sequence[Sequence[int]], size: int) -> list[Sequence[Sequence[int]]]:
    return [prompts[i : i + size] for i in range(0, len(prompts), size)]


async def http_load(
    base_url: str,
    plan: Plan,
    prompts: Sequence[Sequence[int]],
    concurrency: int,
    batch_size: int = 1,
) -> Result:
    """Closed loop over /generative_scoring: a batch's root reads, then its deeper ones
    (one request per read, with an item per text of the batch)."""
    import aiohttp

    url = f"{base_url}/generative_scoring"
    histogram = new_histogram()
    errors = prompt_tokens = texts_ok = 0
    pending = iter(batched(prompts, batch_size))  # shared by the callers: each text once

    async def read(session: aiohttp.ClientSession, batch: Sequence[Sequence[int]], r: Read) -> bool:
        nonlocal prompt_tokens
        async with session.post(url, json=read_body(plan, batch, r)) as response:
            body = await response.json()
        if response.status != 200 or len(body.get("data", ())) != len(batch):
            return False
        prompt_tokens += body["usage"]["prompt_tokens"]
        return True

    async def classify(session: aiohttp.ClientSession, batch: Sequence[Sequence[int]]) -> bool:
        # Like labelprob: the roots fill the prefix cache for the deeper reads.
        roots = await asyncio.gather(*(read(session, batch, r) for r in plan.roots))
        deeper = await asyncio.gather(*(read(session, batch, r) for r in plan.deeper))
        return all(roots) and all(deeper)

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors, texts_ok
        for batch in pending:
            start = time.perf_counter()
            try:
                ok = await classify(session, batch)
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                histogram.record_value(to_us(time.perf_counter() - start))
                texts_ok += len(batch)
            else:
                errors += 1

    # No connection limit: deeper reads of one text go out at once, as gRPC multiplexes them.
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(caller(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    latency = latency_summary_ms(histogram)
    reads = "1 request" if len(plan.reads) == 1 else f"{len(plan.reads)} requests"
    unit = "text" if batch_size == 1 else f"batch of {batch_size} texts"
    note = f"closed loop, {concurrency} callers, {reads} per {unit}"
    if errors == 0 and prompt_tokens != plan.prompt_tokens(prompts):
        note += f"; PROMPTS DIFFER: server {prompt_tokens}, plan {plan.prompt_tokens(prompts)}"
    return Result(
        VLLM_HTTP,
        texts_ok,
        seconds,
        latency["p50"],
        latency["p99"],
        errors,
        note,
    )


def bench_vllm_http(
    base_url: str,
    pgid: int,
    plan: Plan,
    prompts: Sequence[Sequence[int]],
    concurrency: int,
    batch_size: int,
    contender: str = VLLM_HTTP,
) -> Result:
    with cpu_meter(pgid, caller=True) as cpu:
        result = asyncio.run(http_load(base_url, plan, prompts, concurrency, batch_size))
    result.cpu = cpu
    result.contender = contender
    return result


def bench_transformers(plan: Plan, texts: int, dtype: str, log_dir: Path) -> Result:
    spec = plan.spec() | {
        "prompts": plan.prompts[:texts],
        "warmup": plan.warmup[:2],
        "dtype": dtype,
        "threads": len(os.sched_getaffinity(0)),
    }
    out = run_worker("transformers", spec, log_dir)
    latency = latency_summary_ms(histogram_of(out["latencies_s"]))
    passes = "1 forward" if len(plan.reads) == 1 else f"{len(plan.reads)} forwards (no KV reuse)"
    return Result(
        f"transformers {dtype}",
        len(out["latencies_s"]),
        out["seconds"],
        latency["p50"],
        latency["p99"],
        note=f"batch 1, {passes} per text, {spec['threads']} torch threads",
    )


class OfflineEngine:
    """vLLM's LLM class in a worker process that stays up between rounds: each round's
    prompts go in as a file named on the worker's stdin; the result comes back beside it."""

    def __init__(self, plan: Plan, log_dir: Path) -> None:
        self.plan = plan
        self.log_dir = log_dir
        self.spec_path = log_dir / "offline-spec.json"
        self.ready_path = self.spec_path.with_suffix(".ready")
        self.spec_path.write_text(json.dumps(plan.spec() | {"prompts": []}))
        self.ready_path.unlink(missing_ok=True)
        command = worker_command("offline", self.spec_path, log_dir / "offline-result.json")
        self.child = Child("offline worker", command, log_dir / "offline.log", stdin=True)

    def __enter__(self) -> OfflineEngine:
        self.child.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.child.stop()

    def wait_ready(self) -> None:
        self.child.wait_ready(self.ready_path.is_file)  # after its warm-up

    def measure(self, prompts: Sequence[Sequence[int]], tag: str) -> Result:
        path = self.log_dir / f"offline-{tag}.json"
        done = Path(f"{path}.result")
        done.unlink(missing_ok=True)
        path.write_text(json.dumps(list(map(list, prompts))))
        process = self.child.process
        assert process is not None and process.stdin is not None
        process.stdin.write(f"{path}\n".encode())
        process.stdin.flush()
        self.child.wait_ready(done.is_file, timeout_s=REQUEST_TIMEOUT_S * 6)
        out = json.loads(done.read_text())
        stages = "roots, then deeper reads" if self.plan.deeper else "one call"
        return Result(
            "vLLM offline LLM.generate",
            out["texts"],
            out["seconds"],
            note=f"all texts at once ({stages}); no per-text latency",
            cpu=Cpu(**out["cpu"]),
        )
