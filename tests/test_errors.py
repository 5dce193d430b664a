"""Bad input end to end: each entry gets its status and names its field; the server keeps serving.

Also a property-based fuzz (hypothesis) of Classify requests: any request gets OK or
INVALID_ARGUMENT, never an internal error or a hang.
"""

from __future__ import annotations

import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelprob.client import ClassifyParams, Client
from labelprob.v1 import classifier_pb2 as pb
from tests.bad_requests import AB, classify, labels, opts, violations
from tests.conftest import TINY_MAX_MESSAGE_BYTES

pytestmark = pytest.mark.engine


# A few bad requests end to end, one per layer that can refuse them: validation, the
# tokenizer's view of the context, the template, the transport's size bound, and each RPC.
# The full catalogue runs in process (tests/unit/test_validation.py).
CATALOGUE: list[tuple[str, str, object, str]] = [
    ("empty text", "Classify", classify(text=""), "text"),
    ("duplicate labels", "Classify", classify(labels=labels("a", "b", "a")), "labels[2].name"),
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
    (
        "batch calibration on one text",
        "Classify",
        classify(options=opts(calibration=pb.CALIBRATION_BATCH)),
        "options.calibration",
    ),
    (
        "batch with an empty text",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(texts=["ok", "fine", ""], labels=AB),
        "texts[2]",
    ),
    (
        "request over the message limit",
        "ClassifyBatch",
        pb.ClassifyBatchRequest(
            texts=["y" * 4000] * (TINY_MAX_MESSAGE_BYTES // 4000 + 10), labels=AB
        ),
        "request",
    ),
    (
        "chat messages to a model without chat template",
        "ScoreCompletion",
        pb.ScoreCompletionRequest(
            messages=[pb.ChatMessage(role="user", content="c")], completion="x"
        ),
        "messages",
    ),
]


@pytest.mark.parametrize(
    ("name", "rpc", "request_", "field"), CATALOGUE, ids=[c[0] for c in CATALOGUE]
)
def test_bad_input_names_the_field(
    tiny_client: Client, name: str, rpc: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(tiny_client.stub, rpc)(request_, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert violations(err.value) == [field]
    assert field in err.value.details()
    # The server keeps serving after every bad request.
    ok = tiny_client.classify("still serving", ClassifyParams(["alpha", "beta"]))
    assert ok.top_label in {"alpha", "beta"}


def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    """Seven parts valid to one part anything: a third of the requests reach scoring."""
    return st.one_of(*[valid] * 7, anything)


any_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
word = st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=10)
label_names = mostly(word, st.text(max_size=12))
fuzz_labels = mostly(
    st.lists(st.builds(pb.Label, name=word), min_size=2, max_size=6, unique_by=lambda lb: lb.name),
    st.lists(st.builds(pb.Label, name=label_names, description=st.text(max_size=20)), max_size=6),
)
fraction = mostly(st.floats(0, 1), st.floats(allow_nan=True, allow_infinity=True))
fuzz_requests = st.builds(
    pb.ClassifyRequest,
    text=mostly(st.text(min_size=1, max_size=200).filter(str.strip), any_text),
    labels=fuzz_labels,
    instruction=st.text(max_size=40),
    options=st.builds(
        pb.ScoringOptions,
        mode=mostly(st.integers(0, 3), st.integers(-2, 5)),
        calibration=mostly(st.integers(0, 3), st.integers(-1, 6)),
        length_normalization=mostly(st.integers(0, 2), st.integers(-1, 3)),
        truncation=mostly(st.integers(0, 2), st.integers(-1, 3)),
        top_alternatives=mostly(st.integers(0, 20), st.integers(-3, 25)),
        multi_label=st.booleans(),
        thresholds=st.builds(
            pb.DecisionThresholds, min_top_probability=fraction, min_margin=fraction
        ),
    ),
)
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def check_fuzz_request(client: Client, request: pb.ClassifyRequest) -> None:
    """A request either classifies into a distribution over its labels or names a bad field."""
    try:
        reply = client.stub.Classify(request, timeout=60)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, f"{err.code()}: {err.details()}"
        assert violations(err), "INVALID_ARGUMENT without a field"
        return
    result = reply.result
    assert [lb.name for lb in result.labels] == [lb.name for lb in request.labels]
    if not request.options.multi_label:
        assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-6)
    probabilities = [lb.probability for lb in result.labels]
    assert all(math.isfinite(p) for p in probabilities)
    assert result.top_label == result.labels[probabilities.index(max(probabilities))].name


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=fuzz_requests)
def test_fuzzed_requests_never_crash(tiny_client: Client, request: pb.ClassifyRequest) -> None:
    check_fuzz_request(tiny_client, request)
