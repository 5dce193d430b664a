"""Hand-written, unambiguous cases over six kinds of task (tests/data/obvious_cases.jsonl),
written before any model answered them and kept where the model fails.

With the embedded model, the server's defaults must get 90 % of them right, and never turn
a confident right answer wrong: a case whose uncalibrated direct read puts at least 0.6 on
the right label stays right under the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams
from labelprob.v1 import classifier_pb2 as pb

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "obvious_cases.jsonl").read_text().splitlines()
]
UNCALIBRATED_DIRECT = pb.ScoringOptions(
    method=pb.SCORING_METHOD_DIRECT, calibration=pb.CALIBRATION_NONE
)

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def answers(embedded_client) -> list[tuple[dict, pb.Classification, pb.Classification]]:
    out = []
    for case in CASES:
        default = embedded_client.classify(case["text"], ClassifyParams(labels=case["labels"]))
        plain = embedded_client.classify(
            case["text"], ClassifyParams(labels=case["labels"], options=UNCALIBRATED_DIRECT)
        )
        out.append((case, default, plain))
    return out


def test_the_set_covers_six_kinds_of_task() -> None:
    assert len(CASES) >= 40
    assert {c["task"] for c in CASES} == {
        "topic", "sentiment", "emotion", "intent", "spam", "support",
    }  # fmt: skip
    assert all(c["label"] in c["labels"] for c in CASES)


def test_defaults_get_nine_in_ten_right(answers) -> None:
    wrong = [(c["text"], c["label"], d.top_label) for c, d, _ in answers]
    wrong = [w for w in wrong if w[1] != w[2]]
    right = len(answers) - len(wrong)
    assert right >= 0.9 * len(answers), f"{right}/{len(answers)} right; wrong: {wrong}"


def test_defaults_never_flip_a_confident_right_answer(answers) -> None:
    flipped = []
    for case, default, plain in answers:
        probability = {lb.name: lb.probability for lb in plain.labels}
        confident_right = plain.top_label == case["label"] and probability[case["label"]] >= 0.6
        if confident_right and default.top_label != case["label"]:
            flipped.append((case["text"], case["label"], default.top_label))
    assert not flipped


def test_defaults_are_the_combined_method_without_calibration(answers) -> None:
    _, default, plain = answers[0]
    assert default.method == pb.SCORING_METHOD_COMBINED
    assert default.calibration == pb.CALIBRATION_NONE
    assert plain.method == pb.SCORING_METHOD_DIRECT
