"""Fitting the caller's temperature on labelled rows (`labelprob eval --fit-temperature`) and
sending one (`%T`): pure functions, checked against values worked out here."""

from __future__ import annotations

import math
import random

import pytest

from labelprob.tools.evaluation import configs as cf
from labelprob.tools.evaluation import metrics as mt
from labelprob.tools.evaluation import report as rp
from labelprob.tools.evaluation import results as rs


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    return [w / sum(weights) for w in weights]


def test_a_temperature_takes_each_probability_to_the_power_one_over_t() -> None:
    # [0.8, 0.2] at T 2: sqrt 0.894 and 0.447, renormalized 2/3 and 1/3.
    assert [math.exp(x) for x in mt.tempered_log_probs([0.8, 0.2], 2.0)] == pytest.approx(
        [2 / 3, 1 / 3]
    )
    assert mt.tempered_log_loss([[0.8, 0.2], [0.8, 0.2]], [0, 1], 2.0) == pytest.approx(
        (-math.log(2 / 3) - math.log(1 / 3)) / 2
    )


def test_the_fit_recovers_the_temperature_the_truths_were_drawn_at() -> None:
    """Probabilities as a server returns them (softmax of logits) for texts whose labels
    were drawn at twice the temperature: overconfident by T 2, and the fit says so."""
    rng = random.Random(0)
    probabilities, truths = [], []
    for _ in range(3000):
        logits = [rng.gauss(0, 2) for _ in range(4)]
        probabilities.append(softmax(logits))
        truths.append(rng.choices(range(4), weights=softmax([x / 2 for x in logits]))[0])
    assert mt.fit_temperature(probabilities, truths) == pytest.approx(2.0, abs=0.15)


def test_the_fit_is_the_grid_minimum_of_the_log_loss() -> None:
    probabilities = [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]]
    truths = [0, 1, 2, 2]

    def loss(t: float) -> float:  # by hand: -log of p_truth ** (1/t) / sum p ** (1/t)
        return sum(
            -math.log(row[k] ** (1 / t) / sum(p ** (1 / t) for p in row))
            for row, k in zip(probabilities, truths, strict=True)
        )

    grid = [0.05 + 0.001 * i for i in range(20000)]
    best = min(grid, key=loss)
    assert mt.fit_temperature(probabilities, truths) == pytest.approx(best, abs=0.002)
    assert mt.fit_temperature([[0.6, 0.4]], [0]) is None  # one text fits nothing


def test_summarize_fits_the_answered_texts_and_reports_before_and_after() -> None:
    # Both texts said 0.9 for their top label; one was wrong: overconfident, T > 1.
    predictions = [
        rs.Prediction("a", 0.9, 1.0, 0.3, probabilities=(0.9, 0.1)),
        rs.Prediction("a", 0.9, 1.0, 0.3, probabilities=(0.9, 0.1)),
        None,
    ]
    result = rs.summarize("set", "cfg", ["a", "b"], ["a", "b", "a"], predictions, {"X": 1})
    fit = result.temperature_fit
    assert fit is not None and fit.texts == 2
    # Right half the time at 0.9: log-loss lowest where the top probability is 0.5.
    assert fit.temperature == pytest.approx(20.0, rel=0.05)  # the range's end: p -> 1/2
    assert fit.log_loss == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2)
    assert fit.fitted_log_loss < fit.log_loss
    assert fit.ece == pytest.approx(0.4) and fit.fitted_ece < 0.1
    table = rp.format_fits(rp.EvalReport(["cfg"], [], [result], {}))
    assert "| set | cfg | 2 | 20.00 |" in table


def test_a_config_sends_its_temperature() -> None:
    config = cf.parse_config("auto:default%1.8")
    assert config.temperature == 1.8 and config.name == "auto:default%1.8"
    assert config.options().temperature == 1.8
    assert not cf.parse_config("auto:default").options().HasField("temperature")
    both = cf.parse_config("combined/auto:default^2%0.5+prior*8")
    assert (both.temperature, both.label_orders, both.label_prior, both.batch_size) == (
        0.5, 2, True, 8,
    )  # fmt: skip
    assert both.name == "combined/auto:default^2%0.5+prior*8"


@pytest.mark.parametrize("bad", ["auto:default%0", "auto:default%-1", "auto:default%x"])
def test_a_bad_temperature_in_a_config_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="%T"):
        cf.parse_config(bad)
