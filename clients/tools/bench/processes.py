"""Servers and workers in subprocesses, each in its own process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from labelprob.tools.bench.settings import (
    ENGINE_ARGS,
    KV_CACHE_GIB,
    LOOPBACK,
    SERVED_NAME,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    WORKER_MODULE,
    engine_args,
)


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


def labelprob_server(log_dir: Path, extra: Sequence[str] = (), tag: str = "") -> tuple[Child, str]:
    """`labelprob serve` as the bench runs it, with ``extra`` flags; its log is
    labelprob[-tag].log."""
    port = free_port()
    command = [
        sys.executable, "-m", "labelprob.server.cli", "serve",
        "--host", LOOPBACK, "--port", str(port), "--metrics-port", "0",
        # Every contender does the same work: the direct read alone (the channel pooled in by
        # the default method adds a read per label), and no calibration reads per task.
        "--default-method", "direct", "--default-calibration", "none",
        # FULL by trie nodes (the server's default), the plan the other contenders are given.
        "--full-reads", "trie",
        "--dtype", engine_args()["dtype"],
        *extra,
    ]  # fmt: skip
    name = f"labelprob-{tag}" if tag else "labelprob"
    return Child(name, command, log_dir / f"{name}.log"), f"{LOOPBACK}:{port}"


def vllm_http_server(model_path: str, log_dir: Path, pinned: bool = True) -> tuple[Child, str]:
    """vLLM's OpenAI server. ``pinned``: labelprob's engine settings and dtype, so the two
    compare like for like; else vLLM's own defaults (dtype, block size, batch limits), as a
    user who runs `vllm serve` gets them, with only the log-prob limit the route needs."""
    port = free_port()
    # The route asks for logprobs=len(label_token_ids): above the default 20 it fails.
    flags = ["--max-logprobs", str(ENGINE_ARGS["max_logprobs"])]
    if pinned:
        flags += [
            "--block-size", str(ENGINE_ARGS["block_size"]),
            "--max-num-seqs", str(ENGINE_ARGS["max_num_seqs"]),
            "--max-num-batched-tokens", str(ENGINE_ARGS["max_num_batched_tokens"]),
            "--seed", str(ENGINE_ARGS["seed"]),
            "--logprobs-mode", ENGINE_ARGS["logprobs_mode"],
            "--dtype", engine_args()["dtype"],
            "--enable-prefix-caching",
        ]  # fmt: skip
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", SERVED_NAME,
        "--host", LOOPBACK, "--port", str(port), "--disable-log-stats",
        # A log line per request costs CPU that labelprob does not spend.
        "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
        *flags,
    ]  # fmt: skip
    name = "vllm-http" if pinned else "vllm-http-defaults"
    return Child(f"vllm api_server ({name})", command, log_dir / f"{name}.log"), (
        f"http://{LOOPBACK}:{port}"
    )


def worker_command(kind: str, spec_path: Path, out_path: Path) -> list[str]:
    return [
        sys.executable, "-m", WORKER_MODULE,
        "--worker", kind, "--spec", str(spec_path), "--out", str(out_path),
    ]  # fmt: skip


@contextlib.contextmanager
def entered(pair: tuple[Child, str]) -> Iterator[tuple[Child, str]]:
    """A (child, address) pair as a context: the child runs inside it."""
    child, address = pair
    with child:
        yield child, address


def run_worker(kind: str, spec: dict[str, Any], log_dir: Path) -> dict[str, Any]:
    """Runs a measurement in a fresh interpreter, so its memory and threads go away after."""
    spec_path, out_path = log_dir / f"{kind}-spec.json", log_dir / f"{kind}-result.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    command = worker_command(kind, spec_path, out_path)
    with Child(f"{kind} worker", command, log_dir / f"{kind}.log") as child:
        code = child.wait_exit(timeout_s=START_TIMEOUT_S + 3600)
        if code != 0 or not out_path.is_file():
            raise RuntimeError(f"{kind} worker exited {code}; log {child.log_path}:\n"
                               + child.log_tail())  # fmt: skip
    return json.loads(out_path.read_text())
