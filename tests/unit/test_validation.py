"""Bad input through the real servicer in process: each catalogue entry gets INVALID_ARGUMENT
naming its field, and the server keeps serving. Then the wire's inbound rules one by one."""

from __future__ import annotations

import math

import grpc
import pytest

from labelprob.server.config import ServerSettings
from labelprob.server.errors import InvalidArgument
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, LengthNorm
from labelprob.server.wire import inbound
from labelprob.server.wire.inbound import Limits
from labelprob.v1 import classifier_pb2 as pb
from tests.bad_requests import AB, classify, labels, opts, violations
from tests.unit.fake_engine import FakeEngine
from tests.unit.harness import run, serving, with_limits

MAX_MESSAGE_BYTES = 1024 * 1024
SETTINGS = with_limits(max_message_bytes=MAX_MESSAGE_BYTES)


# (name, RPC, request, field the BadRequest must name)
CATALOGUE: list[tuple[str, str, object, str]] = [
    ("empty text", "Classify", classify(text=""), "text"),
    ("whitespace text", "Classify", classify(text=" \n\t "), "text"),
    ("text over the character limit", "Classify", classify(text="x" * 200_001), "text"),
    ("no labels", "Classify", classify(labels=[]), "labels"),
    ("one label", "Classify", classify(labels=labels("alpha")), "labels"),
    ("duplicate labels", "Classify", classify(labels=labels("a", "b", "a")), "labels[2].name"),
    ("empty label name", "Classify", classify(labels=labels("a", "")), "labels[1].name"),
    (
        "label with outer whitespace",
        "Classify",
        classify(labels=labels("a", " b")),
        "labels[1].name",
    ),
    (
        "label with control characters",
        "Classify",
        classify(labels=labels("a", "b\x00")),
        "labels[1].name",
    ),
    ("label name too long", "Classify", classify(labels=labels("a", "b" * 257)), "labels[1].name"),
    (
        "label description too long",
        "Classify",
        classify(labels=[pb.Label(name="a"), pb.Label(name="b", description="d" * 1025)]),
        "labels[1].description",
    ),
    (
        "labels over the limit",
        "Classify",
        classify(labels=labels(*[f"l{i}" for i in range(513)])),
        "labels",
    ),
    ("instruction too long", "Classify", classify(instruction="i" * 4097), "instruction"),
    (
        "example with an unknown label",
        "Classify",
        classify(examples=[pb.Example(text="t", label="gamma")]),
        "examples[0].label",
    ),
    (
        "example with empty text",
        "Classify",
        classify(examples=[pb.Example(text="", label="alpha")]),
        "examples[0].text",
    ),
    (
        "too many examples",
        "Classify",
        classify(examples=[pb.Example(text="t", label="alpha")] * 65),
        "examples",
    ),
    (
        "text longer than the context, reject policy",
        "Classify",
        classify(text="word " * 3000, options=opts(truncation=pb.TRUNCATION_POLICY_REJECT)),
        "text",
    ),
    (
        "task longer than the context",
        "Classify",
        classify(labels=labels(*[f"label number {i} is long" * 3 for i in range(200)])),
        "labels",
    ),
    ("unknown template", "Classify", classify(options=opts(template="nope")), "options.template"),
    ("unknown scoring mode", "Classify", classify(options=opts(mode=42)), "options.mode"),
    (
        "unknown calibration",
        "Classify",
        classify(options=opts(calibration=42)),
        "options.calibration",
    ),
    (
        "unknown truncation policy",
        "Classify",
        classify(options=opts(truncation=9)),
        "options.truncation",
    ),
    (
        "unknown length normalization",
        "Classify",
        classify(options=opts(length_normalization=7)),
        "options.length_normalization",
    ),
    (
        "top probability threshold above 1",
        "Classify",
        classify(options=opts(thresholds=pb.DecisionThresholds(min_top_probability=1.5))),
        "options.thresholds.min_top_probability",
    ),
    (
        "margin threshold negative",
        "Classify",
        classify(options=opts(thresholds=pb.DecisionThresholds(min_margin=-0.1))),
        "options.thresholds.min_margin",
    ),
    (
        "label mass threshold NaN",
        "Classify",
        classify(options=opts(thresholds=pb.DecisionThresholds(min_label_mass=math.nan))),
        "options.thresholds.min_label_mass",
    ),
    (
        "too many top alternatives",
        "Classify",
        classify(options=opts(top_alternatives=21)),
        "options.top_alternatives",
    ),
    (
        "negative top alternatives",
        "Classify",
        classify(options=opts(top_alternatives=-1)),
        "options.top_alternatives",
    ),
    (
        "a prior scope longer than 256 characters",
        "Classify",
        classify(options=opts(prior_scope="s" * 257)),
        "options.prior_scope",
    ),
    (
        "a channel shortlist with the direct method",
        "Classify",
        classify(options=opts(channel_shortlist=4, method=pb.SCORING_METHOD_DIRECT)),
        "options.channel_shortlist",
    ),
    (
        "a channel shortlist with multi-label",
        "Classify",
        classify(options=opts(channel_shortlist=4, multi_label=True)),
        "options.channel_shortlist",
    ),
    (
        "three label orders",
        "Classify",
        classify(options=opts(label_orders=3)),
        "options.label_orders",
    ),
    (
        "two label orders with PRUNED",
        "Classify",
        classify(options=opts(label_orders=2, mode=pb.SCORING_MODE_PRUNED)),
        "options.label_orders",
    ),
    (
        "a label prior with one share for two labels",
        "Classify",
        classify(options=opts(label_prior=[1.0])),
        "options.label_prior",
    ),
    (
        "a label prior with a zero share",
        "Classify",
        classify(options=opts(label_prior=[0.9, 0.0])),
        "options.label_prior[1]",
    ),
    (
        "a label prior with a negative share",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["a", "b"], labels=AB, options=opts(label_prior=[-0.5, 0.5])),
        "options.label_prior[0]",
    ),
    (
        "a zero temperature",
        "Classify",
        classify(options=opts(temperature=0.0)),
        "options.temperature",
    ),
    (
        "a negative temperature",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["a"], labels=AB, options=opts(temperature=-1.0)),
        "options.temperature",
    ),
    (
        "a NaN temperature",
        "Classify",
        classify(options=opts(temperature=math.nan)),
        "options.temperature",
    ),
    (
        "a temperature over 100",
        "Classify",
        classify(options=opts(temperature=101.0)),
        "options.temperature",
    ),
    (
        "a temperature with multi_label",
        "Classify",
        classify(options=opts(temperature=2.0, multi_label=True)),
        "options.temperature",
    ),
    (
        "a label prior with a NaN share",
        "Classify",
        classify(options=opts(label_prior=[math.nan, 1.0])),
        "options.label_prior[0]",
    ),
    (
        "a label prior whose sum overflows",
        "Classify",
        classify(options=opts(label_prior=[1e308, 1e308])),
        "options.label_prior",
    ),
    (
        "a label prior with multi-label",
        "Classify",
        classify(options=opts(label_prior=[0.5, 0.5], multi_label=True)),
        "options.label_prior",
    ),
    (
        "multi-label threshold above 1",
        "Classify",
        classify(options=opts(multi_label=True, multi_label_threshold=2.0)),
        "options.multi_label_threshold",
    ),
    (
        "multi-label with domain PMI",
        "Classify",
        classify(options=opts(multi_label=True, calibration=pb.CALIBRATION_DOMAIN_PMI)),
        "options.calibration",
    ),
    (
        "batch calibration on one text",
        "Classify",
        classify(options=opts(calibration=pb.CALIBRATION_BATCH)),
        "options.calibration",
    ),
    (
        "too many content-free inputs",
        "Classify",
        classify(options=opts(content_free_inputs=["x"] * 9)),
        "options.content_free_inputs",
    ),
    (
        "content-free input too long",
        "Classify",
        classify(options=opts(content_free_inputs=["ok", "x" * 257])),
        "options.content_free_inputs[1]",
    ),
    ("batch without texts", "ClassifyBatch", pb.ClassifyBatchRequest(labels=AB), "texts"),
    (
        "batch with an empty text",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["ok", "fine", ""], labels=AB),
        "texts[2]",
    ),
    (
        "batch over the text limit",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["t"] * 1025, labels=AB),
        "texts",
    ),
    (
        "batch with one label",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["t"], labels=labels("alpha")),
        "labels",
    ),
    (
        "request over the message limit",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["y" * 4000] * (MAX_MESSAGE_BYTES // 4000 + 10), labels=AB),
        "request",
    ),
    (
        "completion without a prompt",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(completion="x"),
        "prompt",
    ),
    (
        "completion with prompt and messages",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(
            prompt="p", messages=[pb.ChatMessage(role="user", content="c")], completion="x"
        ),
        "prompt",
    ),
    ("empty completion", "ScoreCompletion", pb.ScoreCompletionRequest(prompt="p"), "completion"),
    (
        "unknown chat role",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(
            messages=[pb.ChatMessage(role="robot", content="c")], completion="x"
        ),
        "messages[0].role",
    ),
    (
        "chat messages to a model without chat template",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(
            messages=[pb.ChatMessage(role="user", content="c")], completion="x"
        ),
        "messages",
    ),
    (
        "too many completion alternatives",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(prompt="p", completion="x", top_alternatives=21),
        "top_alternatives",
    ),
    (
        "completion past the context",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(prompt="p", completion=" word" * 2000),
        "completion",
    ),
]


def test_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 40
    assert len({name for name, *_ in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize(
    ("name", "rpc", "request_", "field"), CATALOGUE, ids=[c[0] for c in CATALOGUE]
)
def test_bad_input_names_the_field(name: str, rpc: str, request_: object, field: str) -> None:
    async def scenario() -> None:
        async with serving(FakeEngine(max_model_len=1024), SETTINGS) as server:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await getattr(server.stub, rpc)(request_)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert violations(err.value) == [field]
            assert field in err.value.details()
            # The server keeps serving after every bad request.
            ok = await server.stub.Classify(classify(text="still serving"))
            assert ok.result.top_label in {"alpha", "beta"}

    run(scenario)


# -- inbound rules, one by one -----------------------------------------------------

LIMITS = Limits.from_settings(ServerSettings())


def test_limits_come_from_the_settings() -> None:
    settings = ServerSettings(
        max_labels=3, max_text_chars=10, max_batch_texts=2, max_message_bytes=99
    )
    limits = Limits.from_settings(settings)
    assert (
        limits.max_labels,
        limits.max_text_chars,
        limits.max_batch_texts,
        limits.max_request_bytes,
    ) == (
        3,
        10,
        2,
        99,
    )


def test_unset_options_take_the_documented_defaults() -> None:
    call = inbound.classify_call(classify(), LIMITS)
    options = call.options
    assert options.mode is Mode.AUTO
    assert options.length_norm is LengthNorm.SUM
    assert options.calibration is None  # the server default applies
    assert options.truncate is None
    assert options.multi_label_threshold == 0.5
    assert options.cache_salt is None
    assert call.texts == ("some text",)
    assert [lb.name for lb in call.task.labels] == ["alpha", "beta"]


def test_a_zero_multi_label_threshold_is_kept() -> None:
    call = inbound.classify_call(
        classify(options=opts(multi_label=True, multi_label_threshold=0.0)), LIMITS
    )
    assert call.options.multi_label_threshold == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (pb.CALIBRATION_NONE, Calibration.NONE),
        (pb.CALIBRATION_CONTEXTUAL, Calibration.CONTEXTUAL),
        (pb.CALIBRATION_DOMAIN_PMI, Calibration.DOMAIN_PMI),
        (pb.CALIBRATION_AUTO, Calibration.AUTO),
        (pb.CALIBRATION_ONLINE, Calibration.ONLINE),
    ],
)
def test_calibrations_map_to_the_domain(value: int, expected: Calibration) -> None:
    assert (
        inbound.classify_call(classify(options=opts(calibration=value)), LIMITS).options.calibration
        is expected
    )


def test_batch_calibration_is_allowed_on_a_batch() -> None:
    request = pb.ClassifyBatchRequest(
        texts=["a", "b"], labels=AB, options=opts(calibration=pb.CALIBRATION_BATCH)
    )
    call = inbound.batch_call(request, LIMITS, cache_salt="salt")
    assert call.options.calibration is Calibration.BATCH
    assert call.options.cache_salt == "salt"
    assert call.texts == ("a", "b")


def test_multi_label_allows_one_label() -> None:
    call = inbound.classify_call(
        classify(labels=labels("alpha"), options=opts(multi_label=True)), LIMITS
    )
    assert len(call.task.labels) == 1 and call.options.multi_label


def test_operator_limits_apply() -> None:
    limits = Limits.from_settings(ServerSettings(max_labels=3, max_text_chars=5, max_batch_texts=2))
    with pytest.raises(InvalidArgument, match="labels"):
        inbound.classify_call(classify(text="t", labels=labels("a", "b", "c", "d")), limits)
    with pytest.raises(InvalidArgument, match="text"):
        inbound.classify_call(classify(text="123456"), limits)
    with pytest.raises(InvalidArgument, match="texts"):
        inbound.batch_call(pb.ClassifyBatchRequest(texts=["a", "b", "c"], labels=AB), limits)
    assert inbound.classify_call(classify(text="12345", labels=labels("a", "b", "c")), limits)


def test_completion_request_keeps_roles_and_contents() -> None:
    request = pb.ScoreCompletionRequest(
        messages=[
            pb.ChatMessage(role="system", content="s"),
            pb.ChatMessage(role="user", content="u"),
        ],
        completion=" ok",
        top_alternatives=20,
    )
    completion = inbound.completion_request(request, LIMITS, cache_salt="t")
    assert completion.messages == (
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
    )
    assert (completion.completion, completion.top_alternatives, completion.cache_salt) == (
        " ok",
        20,
        "t",
    )
    assert completion.prompt == ""
