"""The real gRPC server on loopback (tiny random model): RPCs, values, health, reflection."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from labelprob.client import ClassifyParams, Client
from labelprob.server.prompts import LabelSpec, load_templates, render_prompt_parts
from labelprob.v1 import classifier_pb2 as pb
from tests import oracle
from tests.bad_requests import violations
from tests.conftest import TEST_TEMPLATES

pytestmark = pytest.mark.engine

LABELS = ["positive", "negative", "neutral"]
BARE = load_templates(TEST_TEMPLATES)["bare"]
PLAIN = pb.ScoringOptions(template="plain", calibration=pb.CALIBRATION_NONE)


def test_model_info(tiny_client: Client, tiny_model_dir: Path) -> None:
    info = tiny_client.model_info()
    assert info.model == str(tiny_model_dir)
    assert info.max_context_tokens == 1024
    assert info.chat_template is False
    assert {"chat", "plain", "bare"} <= set(info.templates)
    assert info.default_calibration == pb.CALIBRATION_AUTO
    assert info.vocab_size > 0
    assert info.server_version and info.engine_version


def test_classify_returns_a_distribution_with_consistent_signals(tiny_client: Client) -> None:
    result = tiny_client.classify("A dull, boring film.", ClassifyParams(LABELS, options=PLAIN))
    probs = [lb.probability for lb in result.labels]
    assert [lb.name for lb in result.labels] == LABELS
    assert sum(probs) == pytest.approx(1.0, abs=1e-9)
    assert result.top_label == LABELS[probs.index(max(probs))]
    assert result.entropy == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-9)
    ordered = sorted(probs, reverse=True)
    assert result.margin == pytest.approx(ordered[0] - ordered[1], abs=1e-9)
    # Normalization over labels is a softmax of the raw log-probs (no calibration).
    z = sum(math.exp(lb.logprob) for lb in result.labels)
    for lb in result.labels:
        assert lb.probability == pytest.approx(math.exp(lb.logprob) / z, rel=1e-6)
        assert lb.uncalibrated_probability == pytest.approx(lb.probability, abs=1e-12)
    assert result.label_mass == pytest.approx(min(1.0, z), rel=1e-6)
    assert result.usage.prompt_tokens > 0 and result.usage.engine_reads >= 1
    assert result.calibration == pb.CALIBRATION_NONE


def test_batch_keeps_order_and_equals_single_calls(tiny_client: Client) -> None:
    texts = ["The team won the final.", "Stocks fell sharply.", "Play some jazz.", "Set an alarm."]
    params = ClassifyParams(LABELS, options=PLAIN)
    batch = tiny_client.classify_batch(texts, params)
    assert len(batch.results) == len(texts)
    for text, got in zip(texts, batch.results, strict=True):
        single = tiny_client.classify(text, params)
        for a, b in zip(got.labels, single.labels, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    assert batch.usage.engine_reads == sum(r.usage.engine_reads for r in batch.results)


def test_prefix_cache_serves_the_shared_prompt(tiny_client: Client) -> None:
    # Labels and instruction come first, so a second text reuses their KV blocks.
    labels = [f"topic{i}" for i in range(40)]
    params = ClassifyParams(labels, instruction="Pick the topic.", options=PLAIN)
    tiny_client.classify("first text to warm the cache", params)
    result = tiny_client.classify("second text", params)
    assert result.usage.cached_prompt_tokens >= 64


def distinct_first_token_labels(tokenizer, prompt: str, count: int) -> list[str]:
    """Label names whose first tokens (in context, after the "bare" template) all differ.

    That template puts no space before the label, so single characters and learned
    word pieces all start with different tokens.
    """
    names: list[str] = []
    firsts: set[int] = set()
    for token_id in range(len(tokenizer)):
        name = tokenizer.decode([token_id]).strip()
        if not name.isprintable() or not name or name in names:
            continue
        ids = oracle.tokens_after(tokenizer, prompt, name)
        if ids and ids[0] not in firsts:
            firsts.add(ids[0])
            names.append(name)
        if len(names) == count:
            return names
    pytest.fail(f"found only {len(names)} labels with distinct first tokens")


def test_more_than_128_labels_are_split_across_reads(tiny_client: Client, tiny_reference) -> None:
    tokenizer, model = tiny_reference
    text = "Set an alarm for seven."
    # The label list is in the prompt, but the prompt's end is the same for any labels.
    suffix = render_prompt_parts(BARE, "", [LabelSpec("x")], [], None).suffix
    labels = distinct_first_token_labels(tokenizer, text + suffix, 150)
    params = ClassifyParams(
        labels,
        options=pb.ScoringOptions(
            template="bare", mode=pb.SCORING_MODE_FIRST_TOKEN, calibration=pb.CALIBRATION_NONE
        ),
    )
    result = tiny_client.classify(text, params)
    assert len(result.labels) == 150
    assert result.usage.engine_reads == 2  # 128 + 22 candidates
    assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)
    # Every label, in either read, has the log-prob transformers gives for the same prompt.
    parts = render_prompt_parts(BARE, "", [LabelSpec(n) for n in labels], [], None)
    prompt = oracle.prompt_ids(
        tokenizer, parts.prefix, text, parts.suffix, bos=parts.add_special_tokens
    )
    for lb in result.labels:
        first = oracle.tokens_after(tokenizer, parts.prefix + text + parts.suffix, lb.name)[:1]
        assert lb.logprob == pytest.approx(oracle.label_logprobs(model, prompt, first)[0], abs=1e-3)


def test_top_alternatives_are_the_most_likely_tokens(tiny_client: Client) -> None:
    options = pb.ScoringOptions(
        template="plain", top_alternatives=5, mode=pb.SCORING_MODE_FIRST_TOKEN
    )
    result = tiny_client.classify("Play some jazz music.", ClassifyParams(LABELS, options=options))
    alts = [t.logprob for t in result.top_alternatives]
    assert len(alts) == 5
    assert alts == sorted(alts, reverse=True)
    # No label's first token can beat the most likely token.
    assert max(lb.tokens[0].logprob for lb in result.labels) <= alts[0] + 1e-6


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ClassifyRequest(text="", labels=[pb.Label(name="a"), pb.Label(name="b")]), "text"),
        (pb.ClassifyRequest(text="hi", labels=[pb.Label(name="a")]), "labels"),
        (
            pb.ClassifyRequest(text="hi", labels=[pb.Label(name="a"), pb.Label(name="a")]),
            "labels[1].name",
        ),
        (
            pb.ClassifyRequest(text="hi", labels=[pb.Label(name="a"), pb.Label(name=" ")]),
            "labels[1].name",
        ),
    ],
)
def test_bad_requests_name_the_field(
    tiny_client: Client, request_: pb.ClassifyRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        tiny_client.stub.Classify(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(err.value) == [field]
    # The server keeps serving.
    assert tiny_client.classify("still fine", ClassifyParams(LABELS, options=PLAIN)).top_label


def test_health_and_reflection(tiny_server) -> None:
    with grpc.insecure_channel(tiny_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "labelprob.v1.ClassifierService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in reply.list_services_response.service}
        assert {"labelprob.v1.ClassifierService", "grpc.health.v1.Health"} <= names
