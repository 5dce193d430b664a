"""Probability math: chain rule, normalization, signals, calibration (no engine)."""

from __future__ import annotations

import math

import pytest

from labelprob.server import scoring
from labelprob.server.scoring import Decision, LengthNorm, Thresholds


def test_chain_rule_and_length_normalization() -> None:
    assert scoring.sequence_logprob([-1.0, -0.5, -0.25]) == pytest.approx(-1.75)
    assert scoring.normalized(-1.5, 2, LengthNorm.MEAN) == pytest.approx(-0.75)
    assert scoring.normalized(-1.5, 2, LengthNorm.SUM) == pytest.approx(-1.5)


def test_softmax_sums_to_one_and_is_stable() -> None:
    probs = scoring.softmax([-1000.0, -1001.0, -1002.0])
    assert sum(probs) == pytest.approx(1.0)
    assert probs[0] / probs[1] == pytest.approx(math.e)
    assert scoring.softmax([-math.inf, -math.inf]) == [0.5, 0.5]


def test_entropy_margin_and_mass() -> None:
    assert scoring.entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert scoring.entropy([1.0, 0.0]) == 0.0
    assert scoring.margin([0.7, 0.2, 0.1]) == pytest.approx(0.5)
    assert scoring.label_mass([math.log(0.3), math.log(0.2)]) == pytest.approx(0.5)


def test_decision_thresholds() -> None:
    sig = scoring.signals([0.8, 0.2], [math.log(0.4), math.log(0.1)])
    assert sig.top_index == 0
    assert scoring.decide(sig, 0.8, Thresholds()) is Decision.NONE
    assert scoring.decide(sig, 0.8, Thresholds(min_top_probability=0.7)) is Decision.ACCEPT
    assert scoring.decide(sig, 0.8, Thresholds(min_margin=0.7)) is Decision.ABSTAIN
    assert scoring.decide(sig, 0.8, Thresholds(min_label_mass=0.6)) is Decision.ABSTAIN


def test_contextual_calibration_cancels_a_prior_bias() -> None:
    biased_prior = [math.log(0.9), math.log(0.1)]
    # A text the model sees exactly like the content-free input carries no evidence.
    same = scoring.softmax(scoring.contextual_calibrated(biased_prior, [biased_prior]))
    assert same == pytest.approx([0.5, 0.5])
    # Evidence against the bias wins once the bias is divided out.
    text = [math.log(0.6), math.log(0.4)]
    assert scoring.softmax(text)[0] > 0.5
    assert scoring.softmax(scoring.contextual_calibrated(text, [biased_prior]))[1] > 0.5


def test_pmi_subtracts_the_premise() -> None:
    assert scoring.pmi_calibrated([-1.0, -2.0], [-3.0, -1.0]) == [2.0, -1.0]


def test_batch_calibration_balances_a_skewed_batch() -> None:
    batch = [[math.log(0.9), math.log(0.1)], [math.log(0.7), math.log(0.3)]]
    calibrated = [scoring.softmax(row) for row in scoring.batch_calibrated(batch)]
    # Mean prior is (0.8, 0.2): the second text leans to label 1 relative to it.
    assert calibrated[0][0] > 0.5
    assert calibrated[1][1] > 0.5
    assert all(sum(row) == pytest.approx(1.0) for row in calibrated)


def test_auto_calibration_resolution() -> None:
    from labelprob.server.scoring import Calibration, resolve_calibration

    assert resolve_calibration(Calibration.AUTO, 8) is Calibration.BATCH
    assert resolve_calibration(Calibration.AUTO, 7) is Calibration.CONTEXTUAL
    assert resolve_calibration(Calibration.BATCH, 1) is Calibration.NONE
    assert resolve_calibration(Calibration.DOMAIN_PMI, 1) is Calibration.DOMAIN_PMI
    # PRUNED needs its offsets before reading: batch statistics come too late.
    assert resolve_calibration(Calibration.AUTO, 8, known_offsets=True) is Calibration.CONTEXTUAL
    assert resolve_calibration(Calibration.BATCH, 8, known_offsets=True) is Calibration.BATCH
    # Pooled with the channel, AUTO is contextual at every batch size; explicit choices stand.
    for size in (1, 8, 64):
        assert resolve_calibration(Calibration.AUTO, size, with_channel=True) is (
            Calibration.CONTEXTUAL
        )
    assert resolve_calibration(Calibration.BATCH, 8, with_channel=True) is Calibration.BATCH
    assert resolve_calibration(Calibration.NONE, 1, with_channel=True) is Calibration.NONE
