"""Calibration over a fake engine: contextual, domain PMI, batch, AUTO, and the cache.

Each expectation is the calibration's definition worked by hand: a text's label
distribution divided by a prior, renormalized."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import pytest

from labelprob.server.classify import Options
from labelprob.server.classify.calibration import (
    CalibrationCache,
    ContentFreeKey,
    PremiseKey,
)
from labelprob.server.errors import EngineUnavailable
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, LengthNorm
from tests.unit.fake_engine import FakeEngine
from tests.unit.harness import classifier_for
from tests.unit.paths import classify, classify_one, probabilities, task

LABELS = task("a", "b")


def divided(p: dict[str, float], prior: dict[str, float]) -> dict[str, float]:
    """p / prior, renormalized: what every calibration here amounts to."""
    ratios = {k: p[k] / prior[k] for k in p}
    z = sum(ratios.values())
    return {k: v / z for k, v in ratios.items()}


def normalized(p: dict[str, float]) -> dict[str, float]:
    z = sum(p.values())
    return {k: v / z for k, v in p.items()}


def by_text(rows: dict[str, dict[str, float]], default: dict[str, float]):
    """A script: the label probabilities after "Text: <text>\\n", for each text named."""

    def script(context: str, token: str) -> float:
        for text, row in rows.items():
            if f"Text: {text}\nLabel:" in context:
                return math.log(row.get(token.strip(), 1e-9))
        return math.log(default.get(token.strip(), 1e-9))

    return script


TEXT = {"a": 0.3, "b": 0.3}


def test_contextual_calibration_divides_out_the_content_free_distribution() -> None:
    cf = {"a": 0.6, "b": 0.2}
    engine = FakeEngine(by_text({"N/A": cf}, TEXT))
    options = Options(calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",))
    result = classify_one(engine, LABELS, "some text", options=options)
    assert result.calibration is Calibration.CONTEXTUAL
    assert probabilities(result) == pytest.approx(divided(normalized(TEXT), normalized(cf)))
    assert [lb.uncalibrated_probability for lb in result.labels] == pytest.approx([0.5, 0.5])


def test_contextual_prior_is_the_mean_of_the_content_free_distributions() -> None:
    rows = {"N/A": {"a": 0.6, "b": 0.2}, "[MASK]": {"a": 0.1, "b": 0.4}}
    text = {"a": 0.5, "b": 0.1}
    engine = FakeEngine(by_text(rows, text))
    options = Options(calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A", "[MASK]"))
    result = classify_one(engine, LABELS, "the text", options=options)
    # normalized rows: (0.75, 0.25) and (0.2, 0.8): the mean prior is (0.475, 0.525).
    assert probabilities(result) == pytest.approx(
        divided(normalized(text), {"a": 0.475, "b": 0.525})
    )


def test_default_content_free_inputs_are_na_empty_and_mask() -> None:
    engine = FakeEngine(by_text({}, TEXT))
    classify_one(engine, LABELS, "t", options=Options(calibration=Calibration.CONTEXTUAL))
    texts = {c.prompt.rpartition("Text: ")[2].removesuffix("\nLabel:") for c in engine.calls}
    assert texts == {"t", "N/A", "", "[MASK]"}


def test_domain_pmi_subtracts_the_premise_scores() -> None:
    premise = {"a": 0.05, "b": 0.4}
    text = {"a": 0.2, "b": 0.4}

    def script(context: str, token: str) -> float:
        row = premise if context.startswith("Finance news.") else text
        return math.log(row.get(token.strip(), 1e-9))

    engine = FakeEngine(script)
    options = Options(calibration=Calibration.DOMAIN_PMI, domain_premise="Finance news.")
    result = classify_one(engine, LABELS, "stocks fell", options=options)
    assert result.calibration is Calibration.DOMAIN_PMI
    assert probabilities(result) == pytest.approx(divided(text, premise))
    # The score is log P(label | text) - log P(label | premise).
    assert result.labels[0].score == pytest.approx(math.log(0.2 / 0.05))
    # The premise is read once, without a text.
    premise_reads = [c for c in engine.calls if c.prompt.startswith("Finance news.")]
    assert len(premise_reads) == 1 and "Text: \nLabel:" in premise_reads[0].prompt


def test_domain_pmi_without_a_premise_uses_the_instruction() -> None:
    engine = FakeEngine(by_text({}, TEXT))
    the_task = task("a", "b", instruction="Sort the mail.")
    classify_one(engine, the_task, "hello", options=Options(calibration=Calibration.DOMAIN_PMI))
    assert sum("Sort the mail." in c.prompt and "Text: \n" in c.prompt for c in engine.calls) == 1


def test_batch_calibration_divides_out_the_batch_mean() -> None:
    rows = {"one": {"a": 0.8, "b": 0.2}, "two": {"a": 0.6, "b": 0.4}, "three": {"a": 0.7, "b": 0.1}}
    engine = FakeEngine(by_text(rows, TEXT))
    options = Options(calibration=Calibration.BATCH)
    results = classify(engine, LABELS, list(rows), options=options)
    dists = [normalized(r) for r in rows.values()]
    prior = {k: sum(d[k] for d in dists) / 3 for k in ("a", "b")}
    for result, dist in zip(results, dists, strict=True):
        assert result.calibration is Calibration.BATCH
        assert probabilities(result) == pytest.approx(divided(dist, prior))


def test_batch_calibration_of_one_text_is_none() -> None:
    result = classify_one(
        FakeEngine(by_text({}, TEXT)), LABELS, "t", options=Options(calibration=Calibration.BATCH)
    )
    assert result.calibration is Calibration.NONE


@pytest.mark.parametrize(
    ("texts", "mode", "expected"),
    [
        (1, Mode.AUTO, Calibration.CONTEXTUAL),
        (7, Mode.AUTO, Calibration.CONTEXTUAL),
        (8, Mode.AUTO, Calibration.BATCH),
        (8, Mode.PRUNED, Calibration.CONTEXTUAL),
    ],
)
def test_auto_calibration_by_batch_size_and_mode(
    texts: int, mode: Mode, expected: Calibration
) -> None:
    engine = FakeEngine(by_text({}, TEXT))
    options = Options(mode=mode)  # calibration unset: the server's default, AUTO
    results = classify(engine, LABELS, [f"text {i}" for i in range(texts)], options=options)
    assert {r.calibration for r in results} == {expected}


def test_server_default_calibration_comes_from_the_settings() -> None:
    from tests.unit.harness import with_classify

    engine = FakeEngine(by_text({}, TEXT))
    classifier = classifier_for(engine, with_classify(default_calibration=Calibration.NONE))
    result = asyncio.run(classifier.classify(LABELS, ["t"], Options()))
    assert result[0].calibration is Calibration.NONE


def content_free_reads(engine: FakeEngine) -> int:
    return sum("Text: N/A\n" in c.prompt for c in engine.calls)


def test_content_free_scores_are_read_once_per_task() -> None:
    engine = FakeEngine(by_text({}, TEXT))
    classifier = classifier_for(engine)
    options = Options(calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",))
    for text in ("one", "two", "three"):
        classify(engine, LABELS, [text], options=options, classifier=classifier)
    assert content_free_reads(engine) == 1
    classify(engine, task("a", "c"), ["four"], options=options, classifier=classifier)
    assert content_free_reads(engine) == 2  # another task


@pytest.mark.parametrize(
    "change",
    [
        {"cache_salt": "tenant-b"},
        {"length_norm": LengthNorm.MEAN},
        {"mode": Mode.FULL},
    ],
    ids=["salt", "norm", "mode"],
)
def test_content_free_scores_are_kept_apart_by_salt_norm_and_mode(change: dict) -> None:
    engine = FakeEngine(by_text({}, TEXT))
    classifier = classifier_for(engine)
    options = Options(
        calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",), cache_salt="tenant-a"
    )
    classify(engine, LABELS, ["one"], options=options, classifier=classifier)
    classify(engine, LABELS, ["two"], options=replace(options, **change), classifier=classifier)
    assert content_free_reads(engine) == 2
    # The salt reaches the content-free reads too.
    salts = {c.cache_salt for c in engine.calls if "Text: N/A\n" in c.prompt}
    assert salts == {"tenant-a", change.get("cache_salt", "tenant-a")}


def test_a_failed_calibration_read_is_retried_by_the_next_request() -> None:
    engine = FakeEngine(by_text({}, TEXT))
    classifier = classifier_for(engine)
    options = Options(calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",))
    engine.failure = EngineUnavailable("engine restarting")
    with pytest.raises(EngineUnavailable):
        classify(engine, LABELS, ["one"], options=options, classifier=classifier)
    engine.failure = None
    result = classify(engine, LABELS, ["one"], options=options, classifier=classifier)[0]
    assert result.calibration is Calibration.CONTEXTUAL


def key(text: str) -> ContentFreeKey:
    return ContentFreeKey(LABELS, text, Mode.FIRST_TOKEN, LengthNorm.SUM, None)


def test_cache_computes_once_for_concurrent_callers() -> None:
    cache = CalibrationCache()
    computed = []

    async def compute() -> list[float]:
        computed.append(1)
        await asyncio.sleep(0.01)
        return [1.0, 2.0]

    async def scenario() -> list[list[float]]:
        return await asyncio.gather(*(cache.get(key("N/A"), compute) for _ in range(5)))

    assert asyncio.run(scenario()) == [[1.0, 2.0]] * 5
    assert len(computed) == 1


def test_cache_keys_of_different_kinds_never_collide() -> None:
    cache = CalibrationCache()
    premise = PremiseKey(LABELS, Mode.FIRST_TOKEN, LengthNorm.SUM, None)

    async def scenario() -> tuple[list[float], list[float]]:
        async def one() -> list[float]:
            return [1.0]

        async def two() -> list[float]:
            return [2.0]

        return await cache.get(key(""), one), await cache.get(premise, two)

    assert asyncio.run(scenario()) == ([1.0], [2.0])
    assert len(cache) == 2


def test_cache_drops_its_oldest_entries_past_its_size() -> None:
    cache = CalibrationCache(max_entries=3)
    calls: list[str] = []

    async def scenario() -> None:
        for text in ("a", "b", "c", "d", "a"):

            async def compute(t: str = text) -> list[float]:
                calls.append(t)
                return [0.0]

            await cache.get(key(text), compute)

    asyncio.run(scenario())
    assert len(cache) == 3
    assert calls == ["a", "b", "c", "d", "a"]  # "a" was evicted by "d", so computed again


def test_cache_returns_copies() -> None:
    cache = CalibrationCache()

    async def scenario() -> list[float]:
        async def compute() -> list[float]:
            return [1.0]

        first = await cache.get(key("x"), compute)
        first.append(99.0)
        return await cache.get(key("x"), compute)

    assert asyncio.run(scenario()) == [1.0]
