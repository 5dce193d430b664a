"""Session fixtures: one real server per model (tiny random Llama, embedded SmolLM2), shared.

Each server is a real `labelprob serve` process on loopback with its own vLLM
engine; both start in parallel the first time a test needs either, and stay up
for the whole session (engine start is tens of seconds).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labelprob.client import Client
from tests.tiny_model import build_tiny_model

SERVER_START_TIMEOUT_S = 900
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_MAX_MESSAGE_BYTES = 1024 * 1024
TEST_TEMPLATES = Path(__file__).resolve().parent / "data" / "templates.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A `labelprob serve` subprocess and how to reach it."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            sys.executable, "-m", "labelprob.server.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(self.metrics_port), *self.args,
        ]  # fmt: skip
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_serving(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"{self.name} server exited {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(1)
        pytest.fail(f"{self.name} server not SERVING after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_reference(tiny_model_dir: Path) -> tuple[object, object]:
    """The tiny model in transformers (float32): the oracle the server must match."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return tokenizer, model


@pytest.fixture(scope="session")
def servers(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """Starts both servers at once so their engine starts overlap."""
    logs = tmp_path_factory.mktemp("server-logs")
    common = ["--max-inflight-reads", "2048", "--templates-file", str(TEST_TEMPLATES)]
    pool = {
        "tiny": ServerProcess(
            "tiny",
            tiny_server_args(
                tiny_model_dir, "--max-message-bytes", str(TINY_MAX_MESSAGE_BYTES), *common
            ),
            logs / "tiny.log",
        ),
        "embedded": ServerProcess(
            "embedded", ["--enforce-eager", "--kv-cache-gib", "1", *common], logs / "embedded.log"
        ),
    }
    for server in pool.values():
        server.start()
    yield pool
    for server in pool.values():
        server.stop()


def tiny_server_args(model_dir: Path, *extra: str) -> list[str]:
    """Flags of a dedicated tiny-model server (tests that stop, kill or overload it).

    Its default method is the direct read: the tiny random model's tests check the direct
    read's math against the oracle, and ask for the channel by name where they test it.
    The embedded server runs the product's defaults."""
    return [
        "--model", str(model_dir), "--dtype", "float32", "--max-model-len", "1024",
        "--enforce-eager", "--kv-cache-gib", "1", "--default-method", "direct", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_server(servers: dict[str, ServerProcess]) -> ServerProcess:
    servers["tiny"].wait_serving()
    return servers["tiny"]


@pytest.fixture(scope="session")
def embedded_server(servers: dict[str, ServerProcess]) -> ServerProcess:
    servers["embedded"].wait_serving()
    return servers["embedded"]


@pytest.fixture
def tiny_client(tiny_server: ServerProcess) -> Iterator[Client]:
    with Client(tiny_server.target, timeout=120) as client:
        yield client


@pytest.fixture
def embedded_client(embedded_server: ServerProcess) -> Iterator[Client]:
    with Client(embedded_server.target, timeout=300) as client:
        yield client
