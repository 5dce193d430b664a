"""Read admission: the bound on engine reads in flight, and what each request is admitted for."""

from __future__ import annotations

import asyncio
import math

import pytest

from labelprob.server.classify import Options
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.errors import Overloaded
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration
from tests.unit.fake_engine import FakeEngine, answer_table
from tests.unit.harness import classifier_for, with_classify
from tests.unit.paths import task

log = math.log


def test_reads_are_admitted_up_to_the_limit() -> None:
    budget = ReadBudget(4)
    with budget.hold(3):
        assert budget.in_flight == 3
        with budget.hold(1):
            assert budget.in_flight == 4
            with pytest.raises(Overloaded) as err, budget.hold(1):
                pass
            assert "4 engine reads in flight; limit 4" in str(err.value)
    assert budget.in_flight == 0


def test_a_request_larger_than_the_limit_runs_alone() -> None:
    budget = ReadBudget(4)
    with budget.hold(10):
        assert budget.in_flight == 10
        with pytest.raises(Overloaded), budget.hold(1):
            pass
    assert budget.in_flight == 0


def test_zero_reads_are_always_admitted() -> None:
    budget = ReadBudget(1)
    with budget.hold(5), budget.hold(0):
        assert budget.in_flight == 5


def test_a_limit_of_zero_admits_everything() -> None:
    budget = ReadBudget(0)
    with budget.hold(10_000), budget.hold(10_000):
        assert budget.in_flight == 20_000


def test_places_are_released_when_the_work_fails() -> None:
    budget = ReadBudget(4)
    with pytest.raises(RuntimeError), budget.hold(3):
        raise RuntimeError("engine error")
    assert budget.in_flight == 0


def test_the_default_limit_is_the_documented_16384() -> None:
    assert classifier_for(FakeEngine()).budget.limit == 16384


# The labels read as words: " alarm" " set" | " alarm" " query" | " play" " music".
TRIE = {
    "": {" alarm": log(0.5), " play": log(0.3)},
    " alarm": {" set": log(0.6), " query": log(0.2)},
    " play": {" music": log(0.7)},
}
TRIE_TASK = task("alarm_set", "alarm_query", "play_music")


async def admitted_places(options: Options, texts: int = 1) -> int:
    """The budget's count while a request's reads are held at the engine."""
    engine = FakeEngine(answer_table(TRIE), gate=asyncio.Event())
    classifier = classifier_for(engine)
    work = asyncio.ensure_future(
        classifier.classify(TRIE_TASK, [f"t{i}" for i in range(texts)], options)
    )
    while not engine.calls:
        await asyncio.sleep(0.001)
    places = classifier.budget.in_flight
    engine.gate.set()  # type: ignore[union-attr]
    await work
    assert classifier.budget.in_flight == 0
    return places


@pytest.mark.parametrize(
    ("mode", "top_k", "texts", "places"),
    [
        (Mode.FIRST_TOKEN, 0, 1, 1),
        (Mode.FULL, 0, 1, 3),  # the trie's three internal nodes
        (Mode.FULL, 3, 1, 4),  # and the top-k read
        (Mode.FULL, 1, 1, 3),  # the first alternative is free
        (Mode.PRUNED, 0, 1, 3),  # admitted for the most it may read: FULL's reads
        (Mode.FULL, 0, 3, 9),  # a batch is admitted whole
    ],
)
def test_a_request_is_admitted_for_its_reads(
    mode: Mode, top_k: int, texts: int, places: int
) -> None:
    options = Options(mode=mode, top_alternatives=top_k, calibration=Calibration.NONE)
    assert asyncio.run(admitted_places(options, texts)) == places


def test_a_batch_over_the_free_places_is_refused_whole() -> None:
    async def scenario() -> int:
        engine = FakeEngine(answer_table(TRIE), gates={"held": asyncio.Event()})
        classifier = classifier_for(engine, with_classify(max_inflight_reads=8))
        held_options = Options(mode=Mode.FIRST_TOKEN, calibration=Calibration.NONE)
        held = asyncio.ensure_future(classifier.classify(TRIE_TASK, ["held"], held_options))
        while not engine.calls:
            await asyncio.sleep(0.001)
        full = Options(mode=Mode.FULL, calibration=Calibration.NONE)
        with pytest.raises(Overloaded):
            await classifier.classify(TRIE_TASK, ["a", "b", "c"], full)  # 9 reads > 7 free
        reads_started = len(engine.calls)
        engine.gates["held"].set()
        await held
        return reads_started

    assert asyncio.run(scenario()) == 1  # none of the refused batch's reads started


def test_calibration_reads_admit_themselves() -> None:
    async def scenario() -> list[int]:
        gates = {"Text: text\n": asyncio.Event(), "Text: N/A\n": asyncio.Event()}
        engine = FakeEngine(answer_table(TRIE), gates=gates)
        classifier = classifier_for(engine)
        options = Options(
            mode=Mode.FIRST_TOKEN, calibration=Calibration.CONTEXTUAL, content_free_inputs=("N/A",)
        )
        work = asyncio.ensure_future(classifier.classify(TRIE_TASK, ["text"], options))
        seen = []
        for gate in gates.values():  # the text's read, then the content-free read
            while len(engine.calls) <= len(seen):
                await asyncio.sleep(0.001)
            seen.append(classifier.budget.in_flight)
            gate.set()
        await work
        return seen

    assert asyncio.run(scenario()) == [1, 1]
