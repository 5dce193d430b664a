"""The wire boundary's outbound half and its status mapping (no server needed)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from labelprob.server.classify import (
    Classification,
    LabelResult,
    ScoredCompletion,
    TokenScore,
    Usage,
)
from labelprob.server.errors import EngineUnavailable, InvalidArgument, Overloaded
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision, LengthNorm
from labelprob.server.wire import outbound
from labelprob.server.wire.enums import CALIBRATIONS, CALIBRATIONS_OUT, MODES, MODES_OUT, NORMS
from labelprob.server.wire.status import grpc_code, grpc_status, status_for
from labelprob.v1 import classifier_pb2 as pb

TOKEN = TokenScore(7, " yes", -0.25)


def classification(**changes: object) -> Classification:
    fields: dict[str, object] = {
        "top_label": "yes",
        "labels": (
            LabelResult("yes", 0.8, -0.25, (TOKEN,), 0.7, -0.1),
            LabelResult("no", 0.2, -1.5, (TokenScore(8, " no", -1.5),), 0.3, -1.4, estimated=True),
        ),
        "label_mass": 0.9,
        "entropy": 0.5,
        "margin": 0.6,
        "top_alternatives": (TOKEN,),
        "decision": Decision.ACCEPT,
        "usage": Usage(10, 4, 2),
        "mode": Mode.PRUNED,
        "calibration": Calibration.CONTEXTUAL,
        "truncated": True,
        "selected_labels": ("yes",),
    }
    return Classification(**(fields | changes))  # type: ignore[arg-type]


def test_a_classification_keeps_every_field_on_the_wire() -> None:
    out = outbound.classification(classification())
    assert out.top_label == "yes"
    assert [
        (lb.name, lb.probability, lb.logprob, lb.uncalibrated_probability, lb.score, lb.estimated)
        for lb in out.labels
    ] == [
        ("yes", 0.8, -0.25, 0.7, -0.1, False),
        ("no", 0.2, -1.5, 0.3, -1.4, True),
    ]
    assert [(t.token_id, t.token, t.logprob) for t in out.labels[0].tokens] == [(7, " yes", -0.25)]
    assert (out.label_mass, out.entropy, out.margin) == (0.9, 0.5, 0.6)
    assert out.decision == pb.DECISION_ACCEPT
    assert (out.usage.prompt_tokens, out.usage.cached_prompt_tokens, out.usage.engine_reads) == (
        10,
        4,
        2,
    )
    assert out.mode == pb.SCORING_MODE_PRUNED
    assert out.calibration == pb.CALIBRATION_CONTEXTUAL
    assert out.truncated
    assert list(out.selected_labels) == ["yes"]


@pytest.mark.parametrize(
    ("decision", "wire"),
    [
        (Decision.NONE, pb.DECISION_UNSPECIFIED),
        (Decision.ACCEPT, pb.DECISION_ACCEPT),
        (Decision.ABSTAIN, pb.DECISION_ABSTAIN),
    ],
)
def test_decisions_on_the_wire(decision: Decision, wire: int) -> None:
    assert outbound.classification(classification(decision=decision)).decision == wire


def test_a_batch_response_sums_its_usage_in_input_order() -> None:
    results = [
        classification(top_label="yes", usage=Usage(10, 4, 2)),
        classification(top_label="no", usage=Usage(5, 1, 1)),
    ]
    out = outbound.batch_response(results)
    assert [r.top_label for r in out.results] == ["yes", "no"]
    assert (out.usage.prompt_tokens, out.usage.cached_prompt_tokens, out.usage.engine_reads) == (
        15,
        5,
        3,
    )


def test_a_scored_completion_on_the_wire() -> None:
    scored = ScoredCompletion(
        (TOKEN,), ((TOKEN, TokenScore(9, " maybe", -2.0)),), -0.25, -0.25, Usage(6, 0, 1)
    )
    out = outbound.completion(scored)
    assert [t.token.token for t in out.tokens] == [" yes"]
    assert [a.token for a in out.tokens[0].alternatives] == [" yes", " maybe"]
    assert (out.sum_logprob, out.mean_logprob, out.usage.prompt_tokens) == (-0.25, -0.25, 6)


def test_every_proto_enum_value_has_a_domain_value_and_back() -> None:
    assert set(MODES) == set(pb.ScoringMode.values())
    assert set(NORMS) == set(pb.LengthNormalization.values())
    assert set(CALIBRATIONS) == set(pb.Calibration.values())
    assert set(MODES_OUT) == set(Mode)
    assert set(CALIBRATIONS_OUT) == set(Calibration)
    assert NORMS[pb.LENGTH_NORMALIZATION_UNSPECIFIED] is LengthNorm.SUM


def unpack(status, kind):
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    return None


def test_invalid_argument_names_its_field() -> None:
    status = status_for(InvalidArgument("labels[1].name", "label name is empty"))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "labels[1].name: label name is empty"
    bad = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("labels[1].name", "label name is empty")
    ]
    info = unpack(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "INVALID_FIELD",
        "labelprob.v1",
        {"field": "labels[1].name"},
    )


def test_overload_carries_its_retry_delay() -> None:
    exc = Overloaded("busy", retry_after_s=2.5)
    status = status_for(exc)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    assert unpack(status, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() == 2500
    assert ("grpc-retry-pushback-ms", "2500") in grpc_status(status, exc).trailing_metadata


def test_only_overload_gets_retry_pushback() -> None:
    exc = InvalidArgument("text", "text is empty")
    keys = [k for k, _ in grpc_status(status_for(exc), exc).trailing_metadata]
    assert "grpc-retry-pushback-ms" not in keys


def test_engine_unavailable_and_bugs() -> None:
    assert status_for(EngineUnavailable("the model is loading")).code == code_pb2.UNAVAILABLE
    bug = status_for(KeyError("private detail"))
    assert bug.code == code_pb2.INTERNAL
    assert bug.message == "internal error: KeyError"
    assert not bug.details


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_grpc_codes_round_trip(code: grpc.StatusCode) -> None:
    assert grpc_code(code.value[0]) is code
