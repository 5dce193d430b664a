"""The caller's temperature (options.temperature) over a fake engine: each probability is the
one without it raised to 1 / T and renormalized, for every method, the ranking kept; a label
prior re-weights after it; PRUNED's bound allows for both, so its top label stays FULL's.

Expected values are computed here from the scripted probabilities, T and the shares."""

from __future__ import annotations

import dataclasses
import math

import pytest

from labelprob.server import scoring
from labelprob.server.classify import Options
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision, Method, Thresholds
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.paths import classify_one, probabilities, task
from tests.unit.test_methods import NAMES, TEXT, engine
from tests.unit.test_pruned import CLEAR, LABELS

log = math.log


def tempered(plain: dict[str, float], temperature: float, shares=None) -> dict[str, float]:
    """p ** (1 / T) x share, normalized."""
    shares = shares or dict.fromkeys(plain, 1.0)
    weighted = {n: p ** (1 / temperature) * shares[n] for n, p in plain.items()}
    total = sum(weighted.values())
    return {n: w / total for n, w in weighted.items()}


@pytest.mark.parametrize("method", [Method.DIRECT, Method.CHANNEL, Method.COMBINED])
@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_the_temperature_tempers_every_method(method: Method, temperature: float) -> None:
    plain_options = Options(calibration=Calibration.CONTEXTUAL, method=method)
    plain = classify_one(engine(), task(*NAMES), TEXT, options=plain_options)
    options = dataclasses.replace(plain_options, temperature=temperature)
    result = classify_one(engine(), task(*NAMES), TEXT, options=options)
    assert probabilities(result) == pytest.approx(tempered(probabilities(plain), temperature))
    assert result.top_label == plain.top_label
    # The reads, and what is reported of them, do not change; the score is divided by T.
    by_name = {lb.name: lb for lb in plain.labels}
    for lb in result.labels:
        assert lb.logprob == pytest.approx(by_name[lb.name].logprob)
        assert lb.uncalibrated_probability == pytest.approx(
            by_name[lb.name].uncalibrated_probability
        )
        assert lb.score == pytest.approx(by_name[lb.name].score / temperature)


def test_the_prior_is_applied_after_the_temperature() -> None:
    options = Options(calibration=Calibration.NONE, method=Method.DIRECT)
    plain = classify_one(engine(), task(*NAMES), TEXT, options=options)
    shares = {"sports": 0.7, "world_news": 0.2, "tech": 0.1}
    both = dataclasses.replace(options, temperature=3.0, label_prior=tuple(shares.values()))
    result = classify_one(engine(), task(*NAMES), TEXT, options=both)
    assert probabilities(result) == pytest.approx(tempered(probabilities(plain), 3.0, shares))


def test_a_softer_answer_can_fall_under_the_abstention_threshold() -> None:
    # world_news 0.5 / 0.8 of the three labels' 0.8: 0.625 at T 1; p ** (1/3) renormalized
    # at T 3: 0.794 / (0.585 + 0.794 + 0.464) = 0.431.
    thresholds = Thresholds(min_top_probability=0.5)
    options = Options(calibration=Calibration.NONE, method=Method.DIRECT, thresholds=thresholds)
    sure = classify_one(engine(), task(*NAMES), TEXT, options=options)
    assert sure.decision is Decision.ACCEPT
    assert probabilities(sure)["world_news"] == pytest.approx(0.625)
    soft = classify_one(
        engine(), task(*NAMES), TEXT, options=dataclasses.replace(options, temperature=3.0)
    )
    assert probabilities(soft)["world_news"] == pytest.approx(0.431, abs=1e-3)
    assert soft.decision is Decision.ABSTAIN


def test_pruned_bound_allows_for_the_temperature_with_a_prior() -> None:
    """Weather texts are 96 % of the traffic, but at T 0.25 alarm_set's 0.63 ** 4 x 0.01
    still beats weather_query's 0.09 ** 4 x 0.96. PRUNED ranks its bounds as score + T x
    log share: it reads the " alarm" branch, and alarm_set is read, not estimated."""
    shares = (0.01, 0.01, 0.01, 0.01, 0.96)
    options = Options(
        mode=Mode.PRUNED, calibration=Calibration.NONE, label_prior=shares, temperature=0.25
    )
    fake = FakeEngine(answer_table(CLEAR))
    pruned = classify_one(fake, LABELS, "wake me at six", options=options)
    full_options = dataclasses.replace(options, mode=Mode.FULL)
    full = classify_one(FakeEngine(answer_table(CLEAR)), LABELS, "t", options=full_options)
    assert 0.63**4 * 0.01 > 0.09**4 * 0.96
    assert pruned.top_label == full.top_label == "alarm_set"
    assert not {lb.name: lb for lb in pruned.labels}["alarm_set"].estimated
    assert {c.prompt.rpartition("Label:")[2] for c in fake.calls} == {"", " alarm"}


def test_pruning_offsets_scale_the_prior_by_the_temperature() -> None:
    prior = [log(0.25), log(0.75)]
    assert scoring.pruning_offsets([1.0, 2.0], prior, 2.0) == pytest.approx(
        [1.0 - 2 * log(0.25), 2.0 - 2 * log(0.75)]
    )
    assert scoring.pruning_offsets(None, [], 2.0) is None  # no prior: T keeps the ranking
