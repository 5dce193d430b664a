"""Shared pieces of the fast tests: tasks, options and a classifier over a fake engine."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from labelprob.server.classify import Classification, Classifier, Options, Task
from labelprob.server.prompts import LabelSpec
from labelprob.server.scoring import Calibration
from tests.unit.fake_engine import FakeEngine
from tests.unit.harness import classifier_for

NO_CALIBRATION = Options(calibration=Calibration.NONE)


def task(*names: str, template: str = "plain", instruction: str = "") -> Task:
    return Task(tuple(LabelSpec(n) for n in names), instruction=instruction, template=template)


def classify(
    engine: FakeEngine,
    the_task: Task,
    texts: Sequence[str],
    options: Options = NO_CALIBRATION,
    *,
    classifier: Classifier | None = None,
    align_block: int = 0,
) -> list[Classification]:
    classifier = classifier or classifier_for(engine, align_block=align_block)
    return asyncio.run(classifier.classify(the_task, texts, options))


def classify_one(engine: FakeEngine, the_task: Task, text: str, **kw: object) -> Classification:
    (result,) = classify(engine, the_task, [text], **kw)  # type: ignore[arg-type]
    return result


def probabilities(result: Classification) -> dict[str, float]:
    return {lb.name: lb.probability for lb in result.labels}
