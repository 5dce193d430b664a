"""The online prior: its store (running mean, window, bound, keys) and the calibration math."""

from __future__ import annotations

import math

import pytest

from labelprob.server import scoring
from labelprob.server.classify.task_prior import EMPTY, PriorKey, TaskPriors
from labelprob.server.classify.types import LabelSpec, Task
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, LengthNorm


def key(scope: str = "", salt: str | None = None, *labels: str) -> PriorKey:
    task = Task(labels=tuple(LabelSpec(n) for n in (labels or ("a", "b", "c"))))
    return PriorKey(task, Mode.FULL, LengthNorm.SUM, salt, scope)


def log_dist(*probabilities: float) -> list[float]:
    return [math.log(p) for p in probabilities]


def test_the_prior_is_the_mean_of_log_normalized_scores() -> None:
    priors = TaskPriors()
    assert priors.snapshot(key()) is EMPTY
    # Unnormalized scores: what counts is each text's log-distribution over the labels.
    priors.record(key(), [[0.0, 0.0, math.log(2)], log_dist(0.5, 0.25, 0.25)])
    snap = priors.snapshot(key())
    assert snap.seen == 2
    first = log_dist(0.25, 0.25, 0.5)
    second = log_dist(0.5, 0.25, 0.25)
    assert list(snap.mean) == pytest.approx(
        [(x + y) / 2 for x, y in zip(first, second, strict=True)]
    )


def test_after_the_window_a_new_text_keeps_the_same_weight() -> None:
    priors = TaskPriors(window=2)
    rows = [log_dist(0.5, 0.25, 0.25), log_dist(0.25, 0.5, 0.25), log_dist(0.25, 0.25, 0.5)]
    priors.record(key(), rows)
    mean2 = [(x + y) / 2 for x, y in zip(rows[0], rows[1], strict=True)]
    want = [m + (x - m) / 2 for m, x in zip(mean2, rows[2], strict=True)]  # weight 1 / window
    snap = priors.snapshot(key())
    assert snap.seen == 3
    assert list(snap.mean) == pytest.approx(want)


def test_tenants_and_scopes_learn_apart_and_the_store_is_bounded() -> None:
    priors = TaskPriors(max_tasks=2)
    priors.record(key("x"), [log_dist(0.5, 0.25, 0.25)])
    priors.record(key("x", "tenant-1"), [log_dist(0.25, 0.5, 0.25)])
    assert priors.snapshot(key("y")) is EMPTY
    assert priors.snapshot(key("x")).mean != priors.snapshot(key("x", "tenant-1")).mean
    priors.snapshot(key("x"))  # used last: the tenant's prior is the oldest now
    priors.record(key("z"), [log_dist(0.25, 0.25, 0.5)])
    assert len(priors) == 2
    assert priors.snapshot(key("x", "tenant-1")) is EMPTY
    assert priors.snapshot(key("x")).seen == 1


def test_online_calibration_weighs_the_task_prior_by_what_was_seen() -> None:
    scores = [0.0, math.log(3), math.log(6)]  # P = 0.1, 0.3, 0.6
    contextual = [0.2, -0.1, 0.4]
    prior = log_dist(0.2, 0.2, 0.6)
    assert scoring.online_calibrated(scores, contextual, None, 0) == contextual
    got = scoring.online_calibrated(scores, contextual, prior, 3)
    own = log_dist(0.1, 0.3, 0.6)
    want = [0.25 * c + 0.75 * (s - p) for c, s, p in zip(contextual, own, prior, strict=True)]
    assert got == pytest.approx(want)
    # The offsets PRUNED needs give the same calibrated scores, up to a constant.
    cf_prior = [s - c for s, c in zip(own, contextual, strict=True)]
    offsets = scoring.online_log_prior(cf_prior, prior, 3)
    shifted = [s - o for s, o in zip(own, offsets, strict=True)]
    assert [x - shifted[0] for x in shifted] == pytest.approx([x - got[0] for x in got])


@pytest.mark.parametrize(
    ("labels", "with_channel", "want"),
    [
        (3, True, Calibration.ONLINE),
        (64, True, Calibration.ONLINE),
        (2, True, Calibration.CONTEXTUAL),
        (3, False, Calibration.CONTEXTUAL),
    ],
)
def test_auto_is_online_with_the_channel_from_three_labels(
    labels: int, with_channel: bool, want: Calibration
) -> None:
    got = scoring.resolve_calibration(Calibration.AUTO, 1, with_channel=with_channel, labels=labels)
    assert got is want
    # PRUNED's bounds need offsets before any read: AUTO stays contextual there.
    pruned = scoring.resolve_calibration(
        Calibration.AUTO, 1, known_offsets=True, with_channel=with_channel, labels=labels
    )
    assert pruned is Calibration.CONTEXTUAL
