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
# The mode tests below are about direct reads (the labels' own tokens).
DIRECT = pb.SCORING_METHOD_DIRECT

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
def test_cli_classifies_obvious_sentences_with_the_direct_read(
    embedded_server: ServerProcess, text: str, labels: list[str], expected: str
) -> None:
    """The direct read gets these right; the server's defaults are held to the 46 cases of
    test_obvious_cases.py (and get the first sentence here wrong: see the README)."""
    run = cli(
        "classify", "--target", embedded_server.target, text, "--labels", *labels,
        "--method", "direct",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["label"] == expected, answer
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert answer["probabilities"][expected] == max(answer["probabilities"].values())


def test_cli_jsonl_in_and_out(embedded_server: ServerProcess, tmp_path: Path) -> None:
    """JSONL in, JSONL out, in input order, with the server's default method: each row is
    the answer the client library gets for the same text and labels. Both ask for contextual
    calibration: the default for 3+ labels, online calibration, moves answers as it learns
    from the texts scored before (tests/test_features.py checks it)."""
    texts = [t for t, _, _ in OBVIOUS]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    target = tmp_path / "out.jsonl"
    labels = ["business", "negative", "positive", "sports", "tech"]
    run = cli(
        "classify", "--target", embedded_server.target, "--input", str(source),
        "--output", str(target), "--labels", *labels, "--calibration", "contextual",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(len(texts)))  # input order kept
    with Client(embedded_server.target, timeout=300) as client:
        contextual = pb.ScoringOptions(calibration=pb.CALIBRATION_CONTEXTUAL)
        expected = [client.classify(t, ClassifyParams(labels, options=contextual)) for t in texts]
    for row, result in zip(rows, expected, strict=True):
        # Two reads of a text agree to rounding in float32; in bf16 (on CPUs with native
        # bf16) batch shapes and cache hits move them, so only a clear answer must match.
        assert row["probabilities"] == {
            lb.name: pytest.approx(lb.probability, abs=0.1) for lb in result.labels
        }
        if result.margin >= 0.2:
            assert row["label"] == result.top_label
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


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

    def direct(mode: int) -> ClassifyParams:
        return ClassifyParams(labels, options=pb.ScoringOptions(mode=mode, method=DIRECT))

    full, first, auto = (
        direct(pb.SCORING_MODE_FULL),
        direct(pb.SCORING_MODE_FIRST_TOKEN),
        direct(pb.SCORING_MODE_AUTO),
    )
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


def test_hwu64_pruned_mode_reads_a_fraction_of_full(embedded_client: Client, hwu64) -> None:
    labels, rows = hwu64

    def params(mode: int) -> ClassifyParams:
        options = pb.ScoringOptions(mode=mode, calibration=pb.CALIBRATION_NONE, method=DIRECT)
        return ClassifyParams(labels, options=options)

    reads = {"full": 0, "pruned": 0}
    computed = {"full": 0, "pruned": 0}
    estimated = 0
    for row in rows:
        f = embedded_client.classify(row["text"], params(pb.SCORING_MODE_FULL))
        p = embedded_client.classify(row["text"], params(pb.SCORING_MODE_PRUNED))
        assert p.mode == pb.SCORING_MODE_PRUNED
        assert sum(lb.probability for lb in p.labels) == pytest.approx(1.0, abs=1e-9)
        for name, result in (("full", f), ("pruned", p)):
            reads[name] += result.usage.engine_reads
            computed[name] += result.usage.prompt_tokens - result.usage.cached_prompt_tokens
        exact = {lb.name: lb.logprob for lb in f.labels}
        full_tokens = {lb.name: [t.logprob for t in lb.tokens] for lb in f.labels}
        # PRUNED's top label is read in full, and FULL ranks it first (up to bf16 noise).
        top = next(lb for lb in p.labels if lb.name == p.top_label)
        assert not top.estimated
        assert exact[p.top_label] >= max(exact.values()) - BF16_NOISE
        for lb in p.labels:
            read = [t.logprob for t in lb.tokens]
            if lb.estimated:
                estimated += 1
                # Read part way: the tokens read are FULL's first ones, and the estimate is
                # at most their joint probability.
                assert 1 <= len(read) < len(full_tokens[lb.name])
                assert read == pytest.approx(full_tokens[lb.name][: len(read)], abs=BF16_NOISE)
                assert lb.logprob <= math.fsum(read) + 1e-9
            else:
                assert lb.logprob == pytest.approx(exact[lb.name], abs=BF16_NOISE)
    assert estimated > 0
    assert reads["pruned"] * 2 < reads["full"], reads
    # Labels read as words ("alarm set") make FULL's deeper reads short already, so PRUNED
    # saves fewer computed tokens than reads.
    assert computed["pruned"] < computed["full"], computed


@pytest.mark.parametrize(
    ("calibration", "norm"),
    [
        (pb.CALIBRATION_CONTEXTUAL, pb.LENGTH_NORMALIZATION_MEAN),
        (pb.CALIBRATION_DOMAIN_PMI, pb.LENGTH_NORMALIZATION_SUM),
    ],
)
def test_hwu64_pruned_mode_bounds_calibrated_scores(
    embedded_client: Client, hwu64, calibration: int, norm: int
) -> None:
    """The bound ranks as the final scores do: calibration offsets and length normalization."""
    labels, rows = hwu64

    def classify(text: str, mode: int) -> pb.Classification:
        options = pb.ScoringOptions(
            mode=mode, calibration=calibration, length_normalization=norm, method=DIRECT
        )
        return embedded_client.classify(text, ClassifyParams(labels, options=options))

    estimated = 0
    for row in rows[:4]:
        f, p = (
            classify(row["text"], pb.SCORING_MODE_FULL),
            classify(row["text"], pb.SCORING_MODE_PRUNED),
        )
        assert p.calibration == f.calibration != pb.CALIBRATION_NONE
        scores = {lb.name: lb.score for lb in f.labels}
        # Calibrated scores differ from FULL's by a constant per text (the normalizer),
        # so compare FULL's own scores: PRUNED's top is FULL's top up to bf16 noise.
        assert scores[p.top_label] >= max(scores.values()) - BF16_NOISE
        assert not next(lb for lb in p.labels if lb.name == p.top_label).estimated
        estimated += sum(lb.estimated for lb in p.labels)
    if calibration == pb.CALIBRATION_CONTEXTUAL:
        # Domain PMI's offsets vary widely between labels, which can keep every branch live.
        assert estimated > 0
