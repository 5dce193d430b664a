"""The facade of the classification path: classify texts, score completions.

Stages, one module each: prepare the task (cached) and fit the text (prepare.py), admit
the reads (admission.py), run them (reads.py), calibrate (calibration.py), build results
(results.py); multi-label and completions have their own modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from labelprob.server import scoring
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.classify.calibration import CalibrationCache, Calibrator
from labelprob.server.classify.completions import CompletionScorer
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.multilabel import MultiLabelClassifier
from labelprob.server.classify.prepare import FittedText, PreparedTask, TaskPreparer
from labelprob.server.classify.reads import ReadExecutor, reads_per_text
from labelprob.server.classify.results import ScoredText, build_classification
from labelprob.server.classify.types import (
    Classification,
    CompletionRequest,
    Options,
    ReadEngine,
    ScoredCompletion,
    Task,
)
from labelprob.server.config import ClassifySettings
from labelprob.server.labels import Mode
from labelprob.server.prompts import DEFAULT_TEMPLATE, Template


class Classifier:
    """Runs classification requests against a read engine."""

    def __init__(
        self,
        engine: ReadEngine,
        templates: dict[str, Template],
        settings: ClassifySettings | None = None,
        *,
        default_template: str = DEFAULT_TEMPLATE,
        align_block: int = 0,
    ) -> None:
        settings = settings or ClassifySettings()
        self.engine = engine
        self.templates = templates
        self.default_calibration = settings.default_calibration
        self.budget = ReadBudget(settings.max_inflight_reads)
        self.preparer = TaskPreparer(
            engine,
            templates,
            default_truncate=settings.default_truncate,
            default_template=default_template,
            align_block=align_block,
        )
        cache = CalibrationCache()
        self.reader = ReadExecutor(engine, self.preparer, self.budget)
        self.calibrator = Calibrator(self.preparer, self.reader, cache)
        self.multi_label = MultiLabelClassifier(
            engine, self.preparer, self.budget, cache, settings.default_calibration
        )
        self.completions = CompletionScorer(engine, self.budget)

    def prepare(self, task: Task) -> PreparedTask:
        return self.preparer.prepare(task)

    def prompt_ids(
        self, prepared: PreparedTask, text: str, *, truncate: bool, align: bool = False
    ) -> FittedText:
        return self.preparer.prompt_ids(prepared, text, truncate=truncate, align=align)

    async def classify(
        self, task: Task, texts: Sequence[str], options: Options
    ) -> list[Classification]:
        """Classifies texts against one task; results keep the order of ``texts``."""
        if options.multi_label:
            return await self.multi_label.classify(task, texts, options)
        prepared = self.preparer.prepare(task)
        mode = prepared.concrete_mode(options.mode)
        calibration = scoring.resolve_calibration(
            options.calibration or self.default_calibration,
            len(texts),
            known_offsets=mode is Mode.PRUNED,
        )
        ctx = RequestContext(task, prepared, options, mode, calibration)
        offsets = None
        if mode is Mode.PRUNED:  # before admission: the vectors' own reads admit themselves
            offsets = await self.calibrator.offsets(ctx)
        # A batch is admitted whole or not at all: no half-done batch holds engine time.
        with self.budget.hold(len(texts) * reads_per_text(prepared, options)):
            raws = await asyncio.gather(
                *(self.reader.read_text(prepared, t, options, offsets) for t in texts)
            )
        scores = [raw.label_scores(prepared.label_ids, options.length_norm) for raw in raws]
        calibrated = await self.calibrator.calibrate(ctx, raws, scores)
        decode = self.engine.decode_token
        return [
            build_classification(ctx, ScoredText(raw, s, c), decode)
            for raw, s, c in zip(raws, scores, calibrated, strict=True)
        ]

    async def score_completion(self, request: CompletionRequest) -> ScoredCompletion:
        """Per-token log-probabilities of a completion after a prompt, in one forward pass."""
        return await self.completions.score(request)
