"""Throughput of labelprob beside the engine under it, vLLM's own HTTP route, and transformers.

Run from the repository root at a quiet time (on 2 cores anything else running skews it):

    python -m tests.bench.throughput --dataset mr --texts 400 --concurrency 8 --json out.json

Every contender gets the same model (the embedded SmolLM2), the exact same prompt token
ids (built by labelprob's own Classifier) and the same label reads (FIRST_TOKEN for mr and
bbc, the FULL trie for hwu: what AUTO resolves to). The three vLLM contenders are started
together and measured in interleaved rounds on new texts each round (one at a time, the
others idle); each one's row is its median round. transformers runs after them. Then
labelprob's prompt-token accounting for HWU64 (64 multi-token labels): FIRST_TOKEN vs FULL
vs PRUNED vs one full prompt per label.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labelprob.client import ClassifyParams, Client
from labelprob.client.client import MODES
from labelprob.client.loadtest import (
    LoadConfig,
    Workload,
    latency_summary_ms,
    load_jsonl_workload,
    new_histogram,
    run_load,
    shuffled,
    to_us,
)
from labelprob.server.classifier import Classifier, PreparedTask, Task
from labelprob.server.labels import Mode, Read, TokenIds, plan_reads, resolve_mode
from labelprob.server.model_source import default_cache_dir, ensure_embedded_model
from labelprob.server.prompts import LabelSpec, load_templates
from labelprob.v1 import classifier_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
DATASETS = {"mr": "mr_sentences.jsonl", "bbc": "bbc_news.jsonl", "hwu": "hwu64_intents.jsonl"}
ACCOUNTING_DATASET = "hwu"
CONTENDERS = ("labelprob", "offline", "vllm-http", "transformers")
LOOPBACK = "127.0.0.1"
SERVED_NAME = "SmolLM2-135M-Instruct"
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 600.0
# A naive run costs one full forward pass per read; this bounds its default text count.
TRANSFORMERS_READ_BUDGET = 100
# Engine settings shared by every vLLM contender. labelprob's server pins these (or gets
# them as vLLM's defaults for an engine it builds itself); vLLM's LLM class and HTTP
# server would otherwise pick other batch limits on CPU (4096/256 and 2048/128).
ENGINE_ARGS: dict[str, Any] = {
    "dtype": "auto",
    "block_size": 32,
    "enable_prefix_caching": True,
    "max_num_seqs": 256,
    "max_num_batched_tokens": 2048,
    "seed": 0,
    "logprobs_mode": "raw_logprobs",
    "max_logprobs": -1,
    "disable_log_stats": True,
}
KV_CACHE_GIB = 2  # labelprob's --kv-cache-gib default
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the plan: prompts and reads every contender computes ------------------------------------


class TokenizerEngine:
    """The tokenizer side of labelprob's Engine, enough for Classifier to build prompts."""

    def __init__(self, model_path: str) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # vLLM derives the same context length from the config for this model.
        self.max_model_len: int = AutoConfig.from_pretrained(model_path).max_position_embeddings

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def chat_renderer(self) -> Callable[[list[dict[str, str]]], str]:
        def render(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )

        return render


class PromptBuilder:
    """labelprob's own prompt path (default template, task cache) on the HF tokenizer."""

    def __init__(self, engine: TokenizerEngine) -> None:
        # As the server builds it by default (--align-prompts): FULL prompts padded to a block.
        self.classifier = Classifier(
            engine,  # type: ignore[arg-type]
            load_templates(None),
            align_block=ENGINE_ARGS["block_size"],
        )

    def prepare(self, labels: Sequence[str]) -> PreparedTask:
        return self.classifier.prepare(Task(labels=tuple(LabelSpec(name) for name in labels)))

    def prompt_ids(self, prepared: PreparedTask, text: str, align: bool = False) -> list[int]:
        """The server aligns a prompt when its reads go deeper than the root (FULL)."""
        return self.classifier.prompt_ids(prepared, text, truncate=True, align=align)[0]


@dataclass
class Plan:
    """What every contender computes: the same prompt ids and, per prompt, the same reads."""

    dataset: str
    model_path: str
    labels: list[str]
    mode: Mode
    label_ids: list[TokenIds]
    prefix_len: int  # the task prefix every prompt starts with
    reads: list[Read]  # per text; the roots (empty prefix) come first
    prompts: list[list[int]]  # the measured texts
    warmup: list[list[int]]  # other texts: warm kernels without caching the measured prompts

    @property
    def roots(self) -> list[Read]:
        return [r for r in self.reads if not r.prefix]

    @property
    def deeper(self) -> list[Read]:
        return [r for r in self.reads if r.prefix]

    def prompt_tokens(self, prompts: Sequence[Sequence[int]]) -> int:
        """Prompt tokens the engine is sent for these texts (each read is prompt + prefix)."""
        return sum(len(p) + len(r.prefix) for p in prompts for r in self.reads)

    def spec(self) -> dict[str, Any]:
        """The plan as JSON for a worker subprocess."""
        return {
            "model_path": self.model_path,
            "reads": [[list(r.prefix), list(r.candidates)] for r in self.reads],
            "prompts": self.prompts,
            "warmup": self.warmup,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model_path": self.model_path,
            "labels": len(self.labels),
            "mode": self.mode.value,
            "reads_per_text": len(self.reads),
            "texts": len(self.prompts),
            "mean_prompt_tokens": sum(map(len, self.prompts)) / max(len(self.prompts), 1),
            "shared_prefix_tokens": self.prefix_len,
        }


def load_texts(dataset: str, seed: int) -> Workload:
    # The files are sorted by label: shuffle so a prefix of them mixes the labels.
    return shuffled(load_jsonl_workload(DATA / DATASETS[dataset]), seed)


def build_plan(
    dataset: str,
    builder: PromptBuilder,
    model_path: str,
    n: int,
    n_warmup: int,
    seed: int,
    mode: Mode = Mode.AUTO,
) -> tuple[Plan, Workload, Workload]:
    """The plan, and the measured and warm-up texts as loadtest workloads (same texts)."""
    data = load_texts(dataset, seed)
    if n + n_warmup > len(data.texts):
        raise SystemExit(f"{dataset} has {len(data.texts)} texts; asked {n} + {n_warmup} warm-up")
    prepared = builder.prepare(data.labels)
    mode = resolve_mode(mode, prepared.label_ids)
    reads = plan_reads(prepared.label_ids, mode)
    align = any(r.prefix for r in reads)

    def part(lo: int, hi: int) -> Workload:
        return Workload(data.texts[lo:hi], data.truths[lo:hi], data.labels, data.source)

    measured, warm = part(0, n), part(n, n + n_warmup)
    plan = Plan(
        dataset=dataset,
        model_path=model_path,
        labels=data.labels,
        mode=mode,
        label_ids=list(prepared.label_ids),
        prefix_len=len(prepared.prefix_ids),
        reads=reads,
        prompts=[builder.prompt_ids(prepared, t, align) for t in measured.texts],
        warmup=[builder.prompt_ids(prepared, t, align) for t in warm.texts],
    )
    return plan, measured, warm


# --- subprocesses ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def engine_env() -> dict[str, str]:
    """The environment labelprob's server sets for vLLM's CPU build, for every contender."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(KV_CACHE_GIB))
    env.setdefault(
        "VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    )
    env.setdefault("VLLM_USE_AOT_COMPILE", "0")  # a start that can reuse its compile cache
    return env


class Child:
    """A subprocess in its own process group, so stopping it also ends the engine
    processes it spawned (vLLM's EngineCore and worker)."""

    def __init__(self, name: str, command: list[str], log_path: Path, stdin: bool = False) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.stdin = stdin  # a pipe for commands (the offline worker's rounds)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Child:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=engine_env(),
                cwd=REPO,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited {self.process.returncode}; log {self.log_path}:\n"
                + self.log_tail()
            )

    def wait_ready(self, probe: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if probe():
                return
            time.sleep(1)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:g} s; log {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid  # also the process group id (start_new_session)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        """SIGTERM first (the servers shut their engine down), then SIGKILL what is left."""
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # end of commands
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # engine processes left behind, if any


def grpc_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def labelprob_server(log_dir: Path) -> tuple[Child, str]:
    port = free_port()
    command = [
        sys.executable, "-m", "labelprob.server.cli", "serve",
        "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0",
        # Contextual calibration would add reads per task; every contender does the same work.
        "--default-calibration", "none",
    ]  # fmt: skip
    return Child("labelprob serve", command, log_dir / "labelprob.log"), f"{LOOPBACK}:{port}"


def vllm_http_server(model_path: str, log_dir: Path) -> tuple[Child, str]:
    port = free_port()
    flags = [
        "--block-size", str(ENGINE_ARGS["block_size"]),
        "--max-num-seqs", str(ENGINE_ARGS["max_num_seqs"]),
        "--max-num-batched-tokens", str(ENGINE_ARGS["max_num_batched_tokens"]),
        "--seed", str(ENGINE_ARGS["seed"]),
        "--logprobs-mode", ENGINE_ARGS["logprobs_mode"],
        # The route asks for logprobs=len(label_token_ids): above the default 20 it fails.
        "--max-logprobs", str(ENGINE_ARGS["max_logprobs"]),
        "--dtype", ENGINE_ARGS["dtype"],
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", SERVED_NAME,
        "--host", LOOPBACK, "--port", str(port),
        "--enable-prefix-caching", "--disable-log-stats",
        # A log line per request costs CPU that labelprob does not spend.
        "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
        *flags,
    ]  # fmt: skip
    return Child("vllm api_server", command, log_dir / "vllm-http.log"), f"http://{LOOPBACK}:{port}"


def run_worker(kind: str, spec: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Runs a measurement in a fresh interpreter, so its memory and threads go away after."""
    spec_path, out_path = log_dir / f"{kind}-spec.json", log_dir / f"{kind}-result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "tests.bench.throughput",
        "--worker", kind, "--spec", str(spec_path), "--out", str(out_path),
    ]  # fmt: skip
    with Child(f"{kind} worker", command, log_dir / f"{kind}.log") as child:
        code = child.wait_exit(timeout_s=START_TIMEOUT_S + 3600)
        if code != 0 or not out_path.is_file():
            raise RuntimeError(f"{kind} worker exited {code}; log {child.log_path}:\n"
                               + child.log_tail())  # fmt: skip
    return json.loads(out_path.read_text())


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
        command = [
            sys.executable, "-m", "tests.bench.throughput",
            "--worker", "offline", "--spec", str(self.spec_path),
            "--out", str(log_dir / "offline-result.json"),
        ]  # fmt: skip
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


# --- contenders ------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds (user + system) a process group spent while measured. CPU time is
    less skewed by other load than wall time, and it shows where the work went."""

    front_s: float = 0.0  # the group's leader: the server's own process, or LLM's
    engine_s: float = 0.0  # the rest of the group: vLLM's EngineCore and worker


def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds of every live process of a process group, by pid."""
    cpu = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # the fields after "pid (comm) "
        if int(fields[2]) == pgid:  # pgrp; then utime and stime, in clock ticks
            cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return cpu


@contextlib.contextmanager
def cpu_meter(pgid: int) -> Iterator[Cpu]:
    cpu = Cpu()
    before = group_cpu_s(pgid)
    yield cpu
    spent = {pid: s - before.get(pid, 0.0) for pid, s in group_cpu_s(pgid).items()}
    cpu.front_s = spent.pop(pgid, 0.0)
    cpu.engine_s = sum(spent.values())


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
        if self.cpu is None or not self.texts:
            return None
        return getattr(self.cpu, f"{part}_s") * 1000 / self.texts


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
    with cpu_meter(pgid) as cpu:
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
        "vLLM HTTP /generative_scoring",
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
) -> Result:
    with cpu_meter(pgid) as cpu:
        result = asyncio.run(http_load(base_url, plan, prompts, concurrency, batch_size))
    result.cpu = cpu
    return result


def bench_transformers(plan: Plan, texts: int, dtype: str, log_dir: Path) -> Result:
    spec = plan.spec() | {
        "prompts": plan.prompts[:texts],
        "warmup": plan.warmup[:2],
        "dtype": dtype,
        "threads": len(os.sched_getaffinity(0)),
    }
    out = run_worker("transformers", spec, log_dir)
    histogram = new_histogram()
    for seconds in out["latencies_s"]:
        histogram.record_value(to_us(seconds))
    latency = latency_summary_ms(histogram)
    passes = "1 forward" if len(plan.reads) == 1 else f"{len(plan.reads)} forwards (no KV reuse)"
    return Result(
        f"transformers {dtype}",
        len(out["latencies_s"]),
        out["seconds"],
        latency["p50"],
        latency["p99"],
        note=f"batch 1, {passes} per text, {spec['threads']} torch threads",
    )


# --- prompt-token accounting (HWU64 through labelprob) ---------------------------------------


@dataclass
class ModeUsage:
    """Summed usage of one scoring mode over the accounting texts."""

    mode: str
    texts: int
    reads: int
    prompt_tokens: int
    cached_tokens: int

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def per_text(self, value: float) -> float:
        return value / self.texts if self.texts else 0.0


def equal_length_groups(
    texts: Sequence[str], length: Callable[[str], int], k: int, size: int
) -> list[tuple[str, ...]]:
    """k groups of ``size`` different texts of equal prompt length, one text of each group
    per mode: every mode then sees cold prompts of the same lengths, so their root reads
    cost the same."""
    waiting: dict[int, list[str]] = {}
    groups: list[tuple[str, ...]] = []
    for text in texts:
        group = waiting.setdefault(length(text), [])
        group.append(text)
        if len(group) == size:
            groups.append(tuple(waiting.pop(length(text))))
            if len(groups) == k:
                break
    return groups


def measure_mode(target: str, labels: Sequence[str], texts: Sequence[str], mode: Mode) -> ModeUsage:
    params = ClassifyParams(
        labels=list(labels),
        options=pb.ScoringOptions(mode=MODES[mode.value], calibration=pb.CALIBRATION_NONE),
    )
    usage = ModeUsage(mode.value, len(texts), 0, 0, 0)
    with Client(target, timeout=REQUEST_TIMEOUT_S) as client:
        # One text at a time, so each text's cache state depends only on what came before.
        for text in texts:
            u = client.classify(text, params).usage
            usage.reads += u.engine_reads
            usage.prompt_tokens += u.prompt_tokens
            usage.cached_tokens += u.cached_prompt_tokens
    return usage


def token_accounting(
    target: str, builder: PromptBuilder, k: int, seed: int, exclude: set[str]
) -> dict[str, Any]:
    data = load_texts(ACCOUNTING_DATASET, seed)
    prepared = builder.prepare(data.labels)
    fresh = [t for t in data.texts if t not in exclude]

    def length(text: str) -> int:
        return len(builder.prompt_ids(prepared, text))

    groups = equal_length_groups(fresh[1:], length, k, size=3)
    first_texts, full_texts, pruned_texts = (list(texts) for texts in zip(*groups, strict=True))
    # The task prefix is the same in every mode: cache it before any is measured.
    measure_mode(target, data.labels, fresh[:1], Mode.FIRST_TOKEN)
    first = measure_mode(target, data.labels, first_texts, Mode.FIRST_TOKEN)
    full = measure_mode(target, data.labels, full_texts, Mode.FULL)
    pruned = measure_mode(target, data.labels, pruned_texts, Mode.PRUNED)
    label_tokens = sum(len(ids) for ids in prepared.label_ids)
    n_labels = len(prepared.label_ids)
    # One full prompt per label (prompt + label, teacher-forced), nothing cached.
    own = sum(n_labels * length(t) + label_tokens for t in first_texts)
    own_usage = ModeUsage("every label its own prompt", len(groups), n_labels * len(groups), own, 0)
    return {
        "dataset": ACCOUNTING_DATASET,
        "labels": n_labels,
        "texts_per_mode": len(groups),
        "modes": [first, full, pruned, own_usage],
        "full_over_first_token": full.computed / first.computed if first.computed else None,
        "pruned_over_first_token": pruned.computed / first.computed if first.computed else None,
        "own_prompts_over_first_token": own / first.computed if first.computed else None,
        "target_full_over_first_token": 1.3,
    }


# --- output ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 or i == len(cells) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def throughput_table(results: Sequence[Result]) -> str:
    base = next((r.per_s for r in results if r.contender.startswith("labelprob")), None)
    rows = [
        [
            r.contender,
            str(r.texts),
            _num(r.seconds, 2),
            _num(r.per_s, 2),
            _num(r.p50_ms),
            _num(r.p99_ms),
            f"{r.per_s / base:.2f}x" if base else "-",
            _num(r.cpu_ms_per_text("front")),
            _num(r.cpu_ms_per_text("engine")),
            str(r.errors),
            r.note,
        ]
        for r in results
    ]
    headers = ["contender", "texts", "seconds", "classif/s", "p50 ms", "p99 ms", "vs labelprob",
               "front CPU ms/text", "engine CPU ms/text", "errors", "note"]  # fmt: skip
    return table(headers, rows)


def accounting_table(acc: dict[str, Any]) -> str:
    rows = [
        [
            u.mode,
            str(u.texts),
            _num(u.per_text(u.reads)),
            _num(u.per_text(u.prompt_tokens)),
            _num(u.per_text(u.computed)),
            f"{u.cached_share:.1%}",
        ]
        for u in acc["modes"]
    ]
    headers = ["mode", "texts", "reads/text", "prompt tok/text", "computed tok/text", "cached"]
    ratio = acc["full_over_first_token"]
    target = acc["target_full_over_first_token"]
    verdict = ""
    if ratio is not None:
        verdict = f" (target <= {target}x: {'met' if ratio <= target else 'NOT met'})"
    own = acc["own_prompts_over_first_token"]
    pruned = acc["pruned_over_first_token"]
    return "\n".join(
        [
            table(headers, rows),
            f"FULL / FIRST_TOKEN computed tokens: {_num(ratio, 2)}x{verdict}",
            f"PRUNED / FIRST_TOKEN computed tokens: {_num(pruned, 2)}x (top label exact)",
            f"own prompts / FIRST_TOKEN computed tokens: {_num(own, 1)}x",
        ]
    )


def to_json(value: Any) -> Any:
    if isinstance(value, ModeUsage):
        return asdict(value) | {"computed": value.computed, "cached_share": value.cached_share}
    if isinstance(value, Result):
        return asdict(value) | {"per_s": value.per_s}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


# --- workers (run in their own interpreter by run_worker) ------------------------------------


def spec_reads(spec: dict[str, Any]) -> list[Read]:
    return [Read(tuple(prefix), tuple(candidates)) for prefix, candidates in spec["reads"]]


def offline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """vLLM's LLM class on the same reads: all texts per call, roots first, then deeper reads."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=spec["model_path"], **(ENGINE_ARGS | spec.get("engine_override", {})))
    reads = spec_reads(spec)
    stages = [[r for r in reads if not r.prefix], [r for r in reads if r.prefix]]

    def batches(prompts: list[list[int]]) -> list[tuple[list, list]]:
        out = []
        for stage in filter(None, stages):
            pairs = [(p, r) for p in prompts for r in stage]
            inputs = [TokensPrompt(prompt_token_ids=[*p, *r.prefix]) for p, r in pairs]
            params = [
                SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    detokenize=False,
                    logprob_token_ids=list(r.candidates),
                )
                for _, r in pairs
            ]
            out.append((inputs, params))
        return out

    def run(prepared: list[tuple[list, list]]) -> None:
        for inputs, params in prepared:
            outputs = llm.generate(inputs, params, use_tqdm=False)
            if not all(o.outputs and o.outputs[0].logprobs for o in outputs):
                raise RuntimeError("a read returned no logprobs")

    run(batches(spec["warmup"]))
    Path(spec["spec_path"]).with_suffix(".ready").touch()
    rounds = 0
    for line in sys.stdin:  # one round per line: the path of its prompts
        path = Path(line.strip())
        prompts = json.loads(path.read_text())
        measured = batches(prompts)  # built before the clock, like a ready request
        with cpu_meter(os.getpgid(0)) as cpu:  # this process leads its group
            start = time.perf_counter()
            run(measured)
            seconds = time.perf_counter() - start
        result = {"texts": len(prompts), "seconds": seconds, "cpu": asdict(cpu)}
        Path(f"{path}.tmp").write_text(json.dumps(result))
        Path(f"{path}.tmp").rename(f"{path}.result")  # whole, or not there
        rounds += 1
    return {"rounds": rounds}


def transformers_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One plain forward pass per read, batch size 1, no KV cache kept between reads."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_path"], dtype=getattr(torch, spec["dtype"])
    ).eval()
    reads = spec_reads(spec)

    def classify(prompt: list[int], reads: Sequence[Read] = reads) -> None:
        for r in reads:
            ids = torch.tensor([[*prompt, *r.prefix]])
            # logits_to_keep=1: the vocabulary projection for the last position only.
            logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
            torch.log_softmax(logits, dim=-1)[list(r.candidates)].tolist()

    latencies = []
    with torch.inference_mode():
        for prompt in spec["warmup"]:
            classify(prompt, reads[:2])  # a few passes warm the kernels
        start = time.perf_counter()
        for prompt in spec["prompts"]:
            t = time.perf_counter()
            classify(prompt)
            latencies.append(time.perf_counter() - t)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "latencies_s": latencies}


WORKERS = {"offline": offline_worker, "transformers": transformers_worker}


# --- main ------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    plan: Plan
    measured: Workload
    warm: Workload
    builder: PromptBuilder
    log_dir: Path
    load_start: float
    results: list[Result] = field(default_factory=list)
    accounting: dict[str, Any] | None = None

    def used_texts(self) -> set[str]:
        return set(self.measured.texts) | set(self.warm.texts)

    def round_slice(self, r: int) -> tuple[Workload, list[list[int]]]:
        """Round ``r``'s texts: new ones every round, so no round finds its prompts cached."""
        n = self.args.texts
        lo, hi = r * n, (r + 1) * n
        m = self.measured
        workload = Workload(m.texts[lo:hi], m.truths[lo:hi], m.labels, m.source)
        return workload, self.plan.prompts[lo:hi]


Measure = Callable[[Workload, list[list[int]], str], Result]


def median_result(rounds: Sequence[Result]) -> Result:
    """A contender's rounds as one row: median throughput and latencies, summed CPU."""
    ordered = sorted(rounds, key=lambda r: r.per_s)
    mid = ordered[len(ordered) // 2]
    p50s = sorted(r.p50_ms for r in rounds if r.p50_ms is not None)
    p99s = sorted(r.p99_ms for r in rounds if r.p99_ms is not None)
    texts = sum(r.texts for r in rounds)
    cpu = None
    if all(r.cpu is not None for r in rounds):
        cpu = Cpu(
            sum(r.cpu.front_s for r in rounds),  # type: ignore[union-attr]
            sum(r.cpu.engine_s for r in rounds),  # type: ignore[union-attr]
        )
    per_round = ", ".join(f"{r.per_s:.1f}" for r in rounds)
    return Result(
        mid.contender,
        texts,
        texts / mid.per_s if mid.per_s else 0.0,  # seconds at the median rate
        p50s[len(p50s) // 2] if p50s else None,
        p99s[len(p99s) // 2] if p99s else None,
        sum(r.errors for r in rounds),
        f"{mid.note}; rounds/s: {per_round}" if len(rounds) > 1 else mid.note,
        cpu,
    )


def engine_rounds(run: Run) -> None:
    """Every engine contender up at once, warmed, then measured in interleaved rounds.

    The machine's speed drifts by tens of percent over minutes (other tenants, clocks), so
    contenders measured one after another would compare different machines. Here each
    round measures every contender back to back on new texts, the order rotating from round
    to round, and each contender's row is its median round. An idle engine costs a few
    percent of one core, the same for each contender.
    """
    args, plan = run.args, run.plan
    wanted = [c for c in ("labelprob", "offline", "vllm-http") if c in args.contenders]
    measures: dict[str, Measure] = {}
    with contextlib.ExitStack() as stack:
        if "labelprob" in wanted or args.accounting_texts > 0:
            child, target = stack.enter_context(_entered(labelprob_server(run.log_dir)))
            log("labelprob: starting")
        if "vllm-http" in wanted:
            http, base_url = stack.enter_context(
                _entered(vllm_http_server(plan.model_path, run.log_dir))
            )
            log("vllm-http: starting")
        if "offline" in wanted:
            offline = stack.enter_context(OfflineEngine(plan, run.log_dir))
            log("offline: starting")
        if "labelprob" in wanted or args.accounting_texts > 0:
            child.wait_ready(lambda: grpc_serving(target))
            asyncio.run(
                run_load(labelprob_load(target, plan, run.warm, args.concurrency, args.batch_size))
            )
            measures["labelprob"] = lambda w, p, tag: bench_labelprob(
                target, child.pid, plan, w, p, args.concurrency, args.batch_size
            )
        if "vllm-http" in wanted:
            http.wait_ready(lambda: http_ok(f"{base_url}/health"))
            asyncio.run(http_load(base_url, plan, plan.warmup, args.concurrency, args.batch_size))
            measures["vllm-http"] = lambda w, p, tag: bench_vllm_http(
                base_url, http.pid, plan, p, args.concurrency, args.batch_size
            )
        if "offline" in wanted:
            offline.wait_ready()
            measures["offline"] = lambda w, p, tag: offline.measure(p, tag)
        settle()
        log(f"all ready; {args.rounds} round(s) of {args.texts} texts")
        rounds: dict[str, list[Result]] = {c: [] for c in wanted}
        for r in range(args.rounds):
            workload, prompts = run.round_slice(r)
            order = wanted[r % len(wanted) :] + wanted[: r % len(wanted)]
            for name in order:
                log(f"round {r + 1}: {name}")
                try:
                    rounds[name].append(measures[name](workload, prompts, f"round{r}"))
                except Exception as exc:  # one contender failing keeps the others' numbers
                    log(f"{name}: FAILED: {exc}")
                    rounds[name].append(Result(name, 0, 0.0, errors=1, note=f"failed: {exc}"[:200]))
        run.results.extend(median_result(rounds[c]) for c in wanted if rounds[c])
        if args.accounting_texts > 0:
            log(f"labelprob: prompt-token accounting on {ACCOUNTING_DATASET}")
            exclude = run.used_texts() if plan.dataset == ACCOUNTING_DATASET else set()
            run.accounting = token_accounting(
                target, run.builder, args.accounting_texts, args.seed, exclude
            )


def settle(timeout_s: float = 120.0) -> None:
    """Waits (up to a bound) for the engines' start-up compilation storm to die down: the
    one-minute load average lags, so it is sampled from /proc/stat over a few seconds."""

    def busy_share(seconds: float = 3.0) -> float:
        def sample() -> tuple[int, int]:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            return sum(fields), fields[3] + fields[4]  # total, idle + iowait

        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
        return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)

    deadline = time.monotonic() + timeout_s
    while (busy := busy_share()) > 0.15 and time.monotonic() < deadline:
        log(f"waiting for the machine to settle: {busy:.0%} busy")


@contextlib.contextmanager
def _entered(pair: tuple[Child, str]) -> Iterator[tuple[Child, str]]:
    child, address = pair
    with child:
        yield child, address


def transformers_phase(run: Run) -> None:
    n = run.args.hf_texts or min(
        len(run.plan.prompts), max(2, TRANSFORMERS_READ_BUDGET // len(run.plan.reads))
    )
    log("transformers: measuring")
    run.results.append(bench_transformers(run.plan, n, run.args.hf_dtype, run.log_dir))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mr")
    p.add_argument("--texts", type=int, default=200, help="measured texts per contender and round")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds, each on new texts; a contender's row is its median round",
    )
    p.add_argument("--concurrency", type=int, default=8, help="callers for the servers")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="texts per call: ClassifyBatch for labelprob, items per request for vLLM HTTP",
    )
    p.add_argument(
        "--mode",
        # PRUNED picks its reads per text from the root read: no fixed plan to hand the others.
        choices=[m.value for m in Mode if m is not Mode.PRUNED],
        default="auto",
        help="label reads (auto: first_token for mr and bbc, full for hwu)",
    )
    p.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    p.add_argument(
        "--warmup-texts",
        type=int,
        default=None,
        help="other texts sent first (default max(8, 2 x concurrency))",
    )
    p.add_argument(
        "--hf-texts",
        type=int,
        default=None,
        help="transformers subset (default: about 100 forward passes' worth)",
    )
    p.add_argument("--hf-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--accounting-texts",
        type=int,
        default=20,
        help="HWU64 texts per mode for the token accounting; 0 skips it",
    )
    p.add_argument("--seed", type=int, default=0, help="shuffle of the data set")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--log-dir", type=Path, help="server and worker logs (default: a temp dir)")
    # Internal: the measurement of one subprocess contender.
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.texts, args.concurrency, args.batch_size, args.rounds) < 1:
        p.error("--texts, --concurrency, --batch-size and --rounds must be >= 1")
    if args.texts % args.batch_size:
        p.error("--texts must be a multiple of --batch-size (every text is sent once)")
    return args


def print_report(run: Run) -> None:
    plan = run.plan.describe()
    print(
        f"\n== throughput: {plan['dataset']} ({plan['labels']} labels, mode {plan['mode']}, "
        f"{plan['reads_per_text']} read(s)/text, mean prompt {plan['mean_prompt_tokens']:.0f} "
        f"tokens, shared prefix {plan['shared_prefix_tokens']}), concurrency "
        f"{run.args.concurrency} x {run.args.batch_size} text(s), "
        f"{run.args.rounds} round(s) of {run.args.texts} texts, "
        f"load average {run.load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end =="
    )
    print(throughput_table(run.results))
    if run.accounting is not None:
        acc = run.accounting
        print(f"\n== prompt-token accounting: {acc['dataset']} ({acc['labels']} labels), "
              f"labelprob, {acc['texts_per_mode']} texts per mode, one at a time ==")  # fmt: skip
        print(accounting_table(acc))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.spec.read_text()) | {"spec_path": str(args.spec)}
        result = WORKERS[args.worker](spec)
        args.out.write_text(json.dumps(result))
        return 0
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="labelprob-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]  # above the core count: the run was not alone
    log(f"load average {load_start:.2f} at the start; logs in {log_dir}")
    model_path = str(ensure_embedded_model(default_cache_dir()))
    builder = PromptBuilder(TokenizerEngine(model_path))
    n_warmup = args.warmup_texts if args.warmup_texts is not None else max(8, 2 * args.concurrency)
    plan, measured, warm = build_plan(
        args.dataset,
        builder,
        model_path,
        args.texts * args.rounds,
        n_warmup,
        args.seed,
        Mode(args.mode),
    )
    run = Run(args, plan, measured, warm, builder, log_dir, load_start)
    try:
        engine_rounds(run)
    except Exception as exc:  # keep what was measured
        log(f"engine rounds: FAILED: {exc}")
    if "transformers" in args.contenders:
        transformers_phase(run)
    print_report(run)
    if args.json is not None:
        options = {k: v for k, v in vars(args).items() if k not in {"worker", "spec", "out"}}
        report = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
            "load_average": {"start": run.load_start, "end": os.getloadavg()[0]},
            "cores": len(os.sched_getaffinity(0)),
            "plan": plan.describe(),
            "results": run.results,
            "accounting": run.accounting,
        }
        args.json.write_text(json.dumps(to_json(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
