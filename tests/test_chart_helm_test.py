"""`helm test`'s Classify pod: rendered by the chart, then run as rendered.

The pod's command is taken from Helm's own render and executed here against a live
tiny-model server (the session's), with the image's PATH stood in by this venv: it must
pass there, and fail when the server's answer is not one of the labels (a stand-in
ClassifierService that answers with another label) or when the server cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import pytest

from labelprob.v1 import classifier_pb2 as pb
from labelprob.v1 import classifier_pb2_grpc as pb_grpc
from tests.chart_support import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    Manifest,
    hook_pods,
    parse,
    render_raw,
    render_valid,
)
from tests.conftest import ServerProcess, free_port

LABELS = ["complaint", "praise", "question"]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def classify_pod(chart: helm.Chart) -> Manifest:
    return hook_pods(render_valid(chart, {}))["test-classify"]


def test_classify_pod_runs_the_cli_against_the_service(
    chart: helm.Chart, classify_pod: Manifest
) -> None:
    assert classify_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    # After the health test: Helm runs test hooks in weight order.
    assert classify_pod["metadata"]["annotations"]["helm.sh/hook-weight"] == "1"
    (container,) = classify_pod["spec"]["containers"]
    assert container["image"] == "labelprob:0.1.0-cpu"  # the server's own image and CLI
    assert container["command"][:2] == ["sh", "-ec"]
    assert "labelprob classify" in container["command"][2]
    assert container["command"][4:] == LABELS
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TARGET"] == f"{FULLNAME}.{NAMESPACE}.svc:50051"
    custom = {"tests": {"classify": {"labels": ["spam", "not spam"], "text": "Win a prize!"}}}
    pod = hook_pods(render_valid(chart, custom))["test-classify"]
    (container,) = pod["spec"]["containers"]
    assert container["command"][4:] == ["spam", "not spam"]
    assert {"name": "TEXT", "value": "Win a prize!"} in container["env"]
    off = {"tests": {"classify": {"enabled": False}}}
    assert "test-classify" not in hook_pods(parse(render_raw(chart, off)))


def image_path(tmp_path: Path) -> str:
    """A PATH like the image's: `labelprob` and `python` from the environment under test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    labelprob = bin_dir / "labelprob"
    labelprob.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m labelprob.server.cli "$@"\n')
    labelprob.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def run_pod(pod: Manifest, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The pod's container command, as the kubelet would run it, with `env` overrides."""
    (container,) = pod["spec"]["containers"]
    pod_env = {e["name"]: e["value"] for e in container["env"]} | env
    return subprocess.run(
        container["command"] + container.get("args", []),
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **pod_env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_classify_pod_passes_against_a_live_server(
    classify_pod: Manifest, tiny_server: ServerProcess, tmp_path: Path
) -> None:
    result = run_pod(classify_pod, image_path(tmp_path), TARGET=tiny_server.target)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert answer["label"] in LABELS
    assert sorted(answer["probabilities"]) == sorted(LABELS)
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert "PASS" in result.stdout


class OtherLabelServicer(pb_grpc.ClassifierServiceServicer):
    """Answers every Classify with a label nobody asked for."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def Classify(self, request: Any, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        asked = [pb.LabelScore(name=label.name, probability=0.5) for label in request.labels]
        return pb.ClassifyResponse(result=pb.Classification(top_label=self.answer, labels=asked))


@pytest.fixture
def wrong_answer_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ClassifierServiceServicer_to_server(OtherLabelServicer("refund"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_classify_pod_fails_when_the_answer_is_not_a_label(
    classify_pod: Manifest, wrong_answer_server: str, tmp_path: Path
) -> None:
    result = run_pod(classify_pod, image_path(tmp_path), TARGET=wrong_answer_server)
    assert result.returncode != 0
    assert f"FAIL: the answer 'refund' is not one of the labels {LABELS}" in result.stderr


def test_classify_pod_fails_when_the_service_is_unreachable(
    classify_pod: Manifest, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{free_port()}"
    result = run_pod(classify_pod, image_path(tmp_path), TARGET=target, TIMEOUT="3")
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
    assert "PASS" not in result.stdout
