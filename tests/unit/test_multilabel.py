"""Multi-label over a fake engine: one yes/no read per label, P(yes) / (P(yes) + P(no))."""

from __future__ import annotations

import math
import re

import pytest

from labelprob.server.classify import Options, Task
from labelprob.server.errors import InvalidArgument
from labelprob.server.labels import Mode
from labelprob.server.prompts import LabelSpec
from labelprob.server.scoring import Calibration
from tests.unit.fake_engine import UNLIKELY, FakeEngine
from tests.unit.paths import classify, classify_one, task

QUESTION = re.compile(r'Does the label "([^"]*)" apply to the text\? Answer Yes or No\.\nAnswer:$')
# Per label: P(" Yes"), P(" yes"), P(" No"), P(" no") after its question.
ANSWERS = {
    "sports": (0.5, 0.1, 0.2, 0.05),
    "music": (0.05, 0.01, 0.6, 0.2),
    "weather": (0.2, 0.1, 0.2, 0.1),
}
MULTI = Options(multi_label=True, calibration=Calibration.NONE)


def yes_no_script(answers: dict[str, tuple[float, ...]], content_free=None):
    """A script over the yes/no question; ``content_free`` answers when the text is N/A."""

    def script(context: str, token: str) -> float:
        match = QUESTION.search(context)
        if match is None:
            return UNLIKELY
        table = content_free if content_free and "Text: N/A\n" in context else answers
        forms = dict(zip((" Yes", " yes", " No", " no"), table[match.group(1)], strict=True))
        return math.log(forms[token]) if token in forms else UNLIKELY

    return script


def p_yes(answers: tuple[float, ...]) -> float:
    y1, y2, n1, n2 = answers
    return (y1 + y2) / (y1 + y2 + n1 + n2)


def test_each_label_gets_its_own_yes_probability() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS))
    result = classify_one(engine, task(*ANSWERS), "The team won.", options=MULTI)
    expected = {name: p_yes(a) for name, a in ANSWERS.items()}
    assert {lb.name: lb.probability for lb in result.labels} == pytest.approx(expected)
    assert sum(expected.values()) != pytest.approx(1.0)
    assert result.top_label == "sports"
    assert result.selected_labels == ("sports", "weather")  # 0.5 and above
    for lb in result.labels:
        assert lb.uncalibrated_probability == pytest.approx(lb.probability)
        y1, y2, *_ = ANSWERS[lb.name]
        assert lb.logprob == pytest.approx(math.log(y1 + y2))
        assert lb.score == pytest.approx(
            math.log(p_yes(ANSWERS[lb.name]) / (1 - p_yes(ANSWERS[lb.name])))
        )
    assert result.mode is Mode.FIRST_TOKEN


def test_multi_label_signals_by_hand() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS))
    result = classify_one(engine, task(*ANSWERS), "The team won.", options=MULTI)
    ps = [p_yes(a) for a in ANSWERS.values()]
    mean_entropy = sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in ps) / 3
    assert result.entropy == pytest.approx(mean_entropy)
    top, second = sorted(ps, reverse=True)[:2]
    assert result.margin == pytest.approx(top - second)
    assert result.label_mass == pytest.approx(sum(sum(a) for a in ANSWERS.values()) / 3)


def test_the_threshold_selects_labels() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS))
    options = Options(multi_label=True, calibration=Calibration.NONE, multi_label_threshold=0.7)
    result = classify_one(engine, task(*ANSWERS), "x", options=options)
    assert result.selected_labels == ("sports",)  # 0.8; weather is exactly 0.5


def test_one_read_per_label_the_text_before_the_question() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS))
    result = classify_one(engine, task(*ANSWERS), "The team won.", options=MULTI)
    assert result.usage.reads == len(ANSWERS) == len(engine.calls)
    asked = [QUESTION.search(c.prompt).group(1) for c in engine.calls]  # type: ignore[union-attr]
    assert asked[0] == "sports"  # the first label's read fills the cache for the others
    assert sorted(asked) == sorted(ANSWERS)
    for call in engine.calls:
        assert call.prompt.index("Text: The team won.") < call.prompt.index("Does the label")
        assert sorted(call.candidates) == sorted([" Yes", " yes", " No", " no"])
    # The shared head and text are served from the fake's cache after the first read.
    assert result.usage.cached_tokens > 0


def test_contextual_calibration_divides_out_the_content_free_odds() -> None:
    content_free = {
        "sports": (0.4, 0.1, 0.4, 0.1),
        "music": (0.1, 0.01, 0.9, 0.01),
        "weather": (0.3, 0.01, 0.1, 0.01),
    }
    engine = FakeEngine(yes_no_script(ANSWERS, content_free))
    options = Options(
        multi_label=True, calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",)
    )
    result = classify_one(engine, task(*ANSWERS), "x", options=options)
    assert result.calibration is Calibration.CONTEXTUAL
    for lb in result.labels:
        p, prior = p_yes(ANSWERS[lb.name]), p_yes(content_free[lb.name])
        odds = (p / (1 - p)) / (prior / (1 - prior))
        assert lb.probability == pytest.approx(odds / (1 + odds))
        assert lb.uncalibrated_probability == pytest.approx(p)


def test_auto_calibration_is_contextual_for_multi_label() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS, ANSWERS))
    results = classify(engine, task(*ANSWERS), ["x"] * 8, options=Options(multi_label=True))
    assert {r.calibration for r in results} == {Calibration.CONTEXTUAL}


@pytest.mark.parametrize("texts", [1, 3])
def test_multi_label_rejects_domain_pmi(texts: int) -> None:
    calibration = Calibration.DOMAIN_PMI
    engine = FakeEngine(yes_no_script(ANSWERS))
    with pytest.raises(InvalidArgument) as err:
        classify(
            engine,
            task(*ANSWERS),
            ["a"] * texts,
            options=Options(multi_label=True, calibration=calibration),
        )
    assert err.value.field == "options.calibration"


def test_an_empty_content_free_input_is_read_as_a_space() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS))
    options = Options(
        multi_label=True, calibration=Calibration.CONTEXTUAL, content_free_inputs=("",)
    )
    classify_one(engine, task(*ANSWERS), "x", options=options)
    assert any("Text:  \n" in c.prompt for c in engine.calls)


def test_a_described_label_is_asked_with_its_description() -> None:
    engine = FakeEngine(yes_no_script({"sports (games and teams)": ANSWERS["sports"]}))
    the_task = Task((LabelSpec("sports", "games and teams"),), template="plain")
    result = classify_one(engine, the_task, "x", options=MULTI)
    assert result.labels[0].probability == pytest.approx(p_yes(ANSWERS["sports"]))


def test_a_long_text_is_cut_to_fit_every_label_question() -> None:
    engine = FakeEngine(yes_no_script(ANSWERS), max_model_len=80)
    result = classify_one(engine, task(*ANSWERS), "word " * 200, options=MULTI)
    assert result.truncated
    assert max(c.prompt_len for c in engine.calls) <= 80 - 1
