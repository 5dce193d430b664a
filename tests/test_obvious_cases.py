"""Hand-written, unambiguous cases over six kinds of task (tests/data/obvious_cases.jsonl),
written before any model answered them and kept where the model fails.

With the embedded model, the server's defaults (the direct read, calibrated online from three
labels on and contextually for two, pooled with the noisy channel: COMBINED) must get 90 %
of them right, and calibration must
never turn a confident right answer wrong: a case whose uncalibrated result puts at least
0.6 on the right label stays right under the defaults. The direct read alone is kept as
the reference the defaults must beat.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelprob.client import ClassifyParams, Client
from labelprob.v1 import classifier_pb2 as pb

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "obvious_cases.jsonl").read_text().splitlines()
]
# Everything left to the server; a prior scope of their own, so the online prior learns from
# these cases alone (in file order), whatever other tests sent the server before.
DEFAULTS = pb.ScoringOptions(prior_scope="obvious-cases")
UNCALIBRATED = pb.ScoringOptions(calibration=pb.CALIBRATION_NONE)
DIRECT = pb.ScoringOptions(method=pb.SCORING_METHOD_DIRECT)

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def answers(embedded_server) -> list[tuple[dict, pb.Classification, pb.Classification]]:
    """Per case: the server's defaults, and the same uncalibrated."""
    out = []
    with Client(embedded_server.target, timeout=300) as client:
        for case in CASES:
            ask = [
                ClassifyParams(labels=case["labels"], options=o) for o in (DEFAULTS, UNCALIBRATED)
            ]
            out.append((case, *(client.classify(case["text"], p) for p in ask)))
    return out


def test_the_set_covers_six_kinds_of_task() -> None:
    assert len(CASES) >= 40
    assert {c["task"] for c in CASES} == {
        "topic", "sentiment", "emotion", "intent", "spam", "support",
    }  # fmt: skip
    assert all(c["label"] in c["labels"] for c in CASES)


def test_the_defaults_get_nine_in_ten_right(answers) -> None:
    wrong = [(c["text"], c["label"], d.top_label) for c, d, _ in answers]
    wrong = [w for w in wrong if w[1] != w[2]]
    right = len(answers) - len(wrong)
    assert right >= 0.9 * len(answers), f"{right}/{len(answers)} right; wrong: {wrong}"


def test_calibration_never_flips_a_confident_right_answer(answers) -> None:
    flipped = []
    for case, default, plain in answers:
        probability = {lb.name: lb.probability for lb in plain.labels}
        confident_right = plain.top_label == case["label"] and probability[case["label"]] >= 0.6
        if confident_right and default.top_label != case["label"]:
            flipped.append((case["text"], case["label"], default.top_label))
    assert not flipped


def test_the_defaults_beat_the_direct_read_alone(embedded_client, answers) -> None:
    combined = sum(c["label"] == d.top_label for c, d, _ in answers)
    direct = sum(
        c["label"]
        == embedded_client.classify(
            c["text"], ClassifyParams(labels=c["labels"], options=DIRECT)
        ).top_label
        for c in CASES
    )
    assert combined > direct
    assert {d.method for _, d, _ in answers} == {pb.SCORING_METHOD_COMBINED}
    # Online calibration from three labels on, contextual for two.
    for case, default, _ in answers:
        online = len(case["labels"]) >= 3
        assert default.calibration == (
            pb.CALIBRATION_ONLINE if online else pb.CALIBRATION_CONTEXTUAL
        )
