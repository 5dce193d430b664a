"""The label prior (options.label_prior) over a fake engine: the probabilities are the ones
without it re-weighted by the shares (Bayes' rule), for every method; the decision sees the
re-weighted probabilities; PRUNED's bound allows for the prior, so its top label stays FULL's.

Expected values are computed here from the scripted probabilities and the shares."""

from __future__ import annotations

import dataclasses
import math

import pytest

from labelprob.server.classify import Options
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, Decision, Method, Thresholds
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.paths import classify, classify_one, probabilities, task
from tests.unit.test_methods import NAMES, TEXT, engine
from tests.unit.test_pruned import CLEAR, LABELS

log = math.log


def bayes(plain: dict[str, float], shares: dict[str, float]) -> dict[str, float]:
    """p(label) x share, normalized: what a prior does to probabilities that assume none."""
    weighted = {n: p * shares[n] for n, p in plain.items()}
    total = sum(weighted.values())
    return {n: w / total for n, w in weighted.items()}


@pytest.mark.parametrize("method", [Method.DIRECT, Method.CHANNEL, Method.COMBINED])
def test_the_prior_reweights_every_method_by_bayes_rule(method: Method) -> None:
    plain_options = Options(calibration=Calibration.CONTEXTUAL, method=method)
    plain = classify_one(engine(), task(*NAMES), TEXT, options=plain_options)
    # Unnormalized shares: the server normalizes them.
    shares = {"sports": 1.0, "world_news": 6.0, "tech": 3.0}
    with_prior = dataclasses.replace(plain_options, label_prior=tuple(shares.values()))
    result = classify_one(engine(), task(*NAMES), TEXT, options=with_prior)
    want = bayes(probabilities(plain), {n: s / 10 for n, s in shares.items()})
    assert probabilities(result) == pytest.approx(want)
    assert result.top_label == max(want, key=want.__getitem__)
    # The reads, and what is reported of them, do not change.
    by_name = {lb.name: lb for lb in plain.labels}
    for lb in result.labels:
        assert lb.logprob == pytest.approx(by_name[lb.name].logprob)
        assert lb.channel_logprob == pytest.approx(by_name[lb.name].channel_logprob)
        assert lb.uncalibrated_probability == pytest.approx(
            by_name[lb.name].uncalibrated_probability
        )
        assert lb.score == pytest.approx(by_name[lb.name].score + log(shares[lb.name] / 10))


def test_equal_shares_change_nothing() -> None:
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED)
    plain = classify_one(engine(), task(*NAMES), TEXT, options=options)
    even = classify_one(
        engine(), task(*NAMES), TEXT, options=dataclasses.replace(options, label_prior=(2, 2, 2))
    )
    assert probabilities(even) == pytest.approx(probabilities(plain))


def test_two_labels_read_in_both_orders_take_the_prior_in_the_labels_order() -> None:
    names = ("sports", "tech")
    options = Options(calibration=Calibration.NONE, method=Method.COMBINED, label_orders=2)
    plain = classify_one(engine(), task(*names), TEXT, options=options)
    skewed = dataclasses.replace(options, label_prior=(0.2, 0.8))
    result = classify_one(engine(), task(*names), TEXT, options=skewed)
    want = bayes(probabilities(plain), {"sports": 0.2, "tech": 0.8})
    assert probabilities(result) == pytest.approx(want)


def test_the_decision_sees_the_reweighted_probabilities() -> None:
    thresholds = Thresholds(min_top_probability=0.9)
    options = Options(calibration=Calibration.NONE, method=Method.DIRECT, thresholds=thresholds)
    plain = classify_one(engine(), task(*NAMES), TEXT, options=options)
    assert plain.top_label == "world_news" and max(probabilities(plain).values()) < 0.9
    assert plain.decision is Decision.ABSTAIN
    # The texts are almost all sports here: 0.2 x 0.98 against 0.5 x 0.01 and 0.1 x 0.01.
    sure = dataclasses.replace(options, label_prior=(0.98, 0.01, 0.01))
    result = classify_one(engine(), task(*NAMES), TEXT, options=sure)
    assert result.top_label == "sports" and probabilities(result)["sports"] >= 0.9
    assert result.decision is Decision.ACCEPT


def test_a_batch_applies_the_prior_to_each_text() -> None:
    options = Options(calibration=Calibration.NONE, method=Method.DIRECT)
    texts = [TEXT, "match report", "chip launch"]
    plain = classify(engine(), task(*NAMES), texts, options)
    shares = {"sports": 0.1, "world_news": 0.1, "tech": 0.8}
    skewed = dataclasses.replace(options, label_prior=tuple(shares.values()))
    results = classify(engine(), task(*NAMES), texts, skewed)
    for before, after in zip(plain, results, strict=True):
        assert probabilities(after) == pytest.approx(bayes(probabilities(before), shares))


@pytest.mark.parametrize(
    ("shares", "top"),
    [((1, 1, 1, 1, 1), "alarm_set"), ((0.01, 0.01, 0.01, 0.01, 0.96), "weather_query")],
)
def test_pruned_bound_allows_for_the_prior(shares: tuple[float, ...], top: str) -> None:
    """Without a prior PRUNED reads the " alarm" branch alone (alarm_set 0.63 beats every
    other branch's bound). With most texts about the weather, weather_query's 0.09 x 0.96
    beats alarm_set's 0.63 x 0.01: the " weather" branch must be read, and is."""
    options = Options(mode=Mode.PRUNED, calibration=Calibration.NONE, label_prior=shares)
    fake = FakeEngine(answer_table(CLEAR))
    pruned = classify_one(fake, LABELS, "wake me at six", options=options)
    full_options = dataclasses.replace(options, mode=Mode.FULL)
    full = classify_one(FakeEngine(answer_table(CLEAR)), LABELS, "t", options=full_options)
    assert pruned.top_label == full.top_label == top
    assert not {lb.name: lb for lb in pruned.labels}[top].estimated
    read = {c.prompt.rpartition("Label:")[2] for c in fake.calls}
    assert (" weather" in read) is (top == "weather_query")
