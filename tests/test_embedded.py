"""The embedded SmolLM2 model through the real server and the `labelprob classify` CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.v1 import classifier_pb2 as pb
from tests.conftest import SHARED_DATA, ServerProcess

pytestmark = pytest.mark.embedded

# The embedded model runs in bf16: a label of several tokens differs by up to ~0.4 nats
# between two reads of the same prompt (batch shapes, prefix-cache hits).
BF16_NOISE = 0.5

OBVIOUS = [
    (
        "I absolutely loved this movie, the acting was wonderful.",
        ["positive", "negative"],
        "positive",
    ),
    ("A dull, boring film. I hated every minute of it.", ["positive", "negative"], "negative"),
    (
        "The striker scored twice as the team won the championship final.",
        ["business", "politics", "sports", "tech"],
        "sports",
    ),
    (
        "The new smartphone has a faster processor and a better camera.",
        ["business", "politics", "sports", "tech"],
        "tech",
    ),
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "labelprob.server.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("text", "labels", "expected"), OBVIOUS)
def test_cli_classifies_obvious_sentences(
    embedded_server: ServerProcess, text: str, labels: list[str], expected: str
) -> None:
    run = cli("classify", "--target", embedded_server.target, text, "--labels", *labels)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["label"] == expected, answer
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert answer["probabilities"][expected] == max(answer["probabilities"].values())


def test_cli_jsonl_in_and_out(embedded_server: ServerProcess, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"text": t, "id": i}) + "\n" for i, (t, _, _) in enumerate(OBVIOUS[:2]))
    )
    target = tmp_path / "out.jsonl"
    run = cli(
        "classify",
        "--target",
        embedded_server.target,
        "--input",
        str(source),
        "--output",
        str(target),
        "--labels",
        "positive",
        "negative",
    )
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1]  # input order kept
    assert [r["label"] for r in rows] == ["positive", "negative"]
    for r in rows:
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def hwu64() -> tuple[list[str], list[dict]]:
    path = SHARED_DATA / "hwu64_intents.jsonl"
    if not path.exists():
        pytest.fail(f"{path} is missing: the shared data sets sit beside the repository")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted({r["label"] for r in rows}), rows[::129][:8]


def test_hwu64_sixty_four_multi_token_labels(embedded_client: Client, hwu64) -> None:
    labels, rows = hwu64
    assert len(labels) == 64
    full = ClassifyParams(labels, options=pb.ScoringOptions(mode=pb.SCORING_MODE_FULL))
    first = ClassifyParams(labels, options=pb.ScoringOptions(mode=pb.SCORING_MODE_FIRST_TOKEN))
    auto = ClassifyParams(labels, options=pb.ScoringOptions(mode=pb.SCORING_MODE_AUTO))
    for row in rows:
        f = embedded_client.classify(row["text"], full)
        a = embedded_client.classify(row["text"], auto)
        one = embedded_client.classify(row["text"], first)
        for result in (f, a):
            assert len(result.labels) == 64
            assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)
        # The labels share first tokens ("alarm", "calendar", ...): AUTO must read them fully.
        assert a.mode == pb.SCORING_MODE_FULL
        assert [lb.logprob for lb in a.labels] == pytest.approx(
            [lb.logprob for lb in f.labels], abs=BF16_NOISE
        )
        assert any(len(lb.tokens) > 1 for lb in f.labels)
        assert f.usage.engine_reads > one.usage.engine_reads == 1
        for lf, l1 in zip(f.labels, one.labels, strict=True):
            # Chain rule: a whole label is never more likely than its first token.
            assert lf.logprob <= lf.tokens[0].logprob + 1e-9
            assert lf.tokens[0].token_id == l1.tokens[0].token_id
            assert math.isfinite(lf.logprob)
