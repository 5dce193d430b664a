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
from labelprob.server.classify.channel import ChannelReader, ChannelScores
from labelprob.server.classify.completions import CompletionScorer
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.direct import DirectReader, DirectScores
from labelprob.server.classify.multilabel import MultiLabelClassifier
from labelprob.server.classify.prepare import FittedText, PreparedTask, TaskPreparer
from labelprob.server.classify.reads import ReadExecutor
from labelprob.server.classify.results import ScoredText, build_classification, channel_only
from labelprob.server.classify.task_prior import EMPTY
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
from labelprob.server.scoring import Calibration, Method


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
        self.reader = ReadExecutor(engine, self.preparer, self.budget, settings.full_reads)
        self.calibrator = Calibrator(self.preparer, self.reader, cache)
        self.multi_label = MultiLabelClassifier(
            engine, self.preparer, self.budget, cache, settings.default_calibration
        )
        self.completions = CompletionScorer(engine, self.budget)
        self.channel = ChannelReader(engine, self.preparer, self.budget)
        self.direct = DirectReader(self.preparer, self.reader, self.calibrator)
        self.default_method = settings.default_method
        self.channel_shortlist = settings.channel_shortlist

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
        ctx = self._context(task, options, len(texts))
        direct, channels = await self._scores(ctx, texts)
        if direct is None:
            raws = [channel_only(ctx, c) for c in channels]  # type: ignore[union-attr]
            scores = calibrated = [None] * len(texts)
        else:
            raws, scores, calibrated = direct.raws, direct.scores, direct.calibrated
        pool = scoring.pool_for(ctx.label_orders)
        results = []
        for i, raw in enumerate(raws):
            channel = channels[i] if channels is not None else None
            if channel is not None and ctx.method.reads_direct:
                raw.usage.add(channel.usage)
            scored = ScoredText(
                raw, scores[i], calibrated[i], channel, pool, ctx.log_label_prior,
                ctx.options.temperature,
            )  # fmt: skip
            results.append(build_classification(ctx, scored, self.engine.decode_token))
        return results

    def _context(self, task: Task, options: Options, texts: int) -> RequestContext:
        """The request with its method, mode, calibration and label orders resolved."""
        method = options.method or self.default_method
        prepared = self.preparer.prepare(task)
        mode = prepared.concrete_mode(options.mode)
        calibration = scoring.resolve_calibration(
            options.calibration or self.default_calibration,
            texts,
            known_offsets=mode is Mode.PRUNED,
            with_channel=method.reads_channel,
            labels=len(task.labels),
        )
        prior_key, prior = None, EMPTY
        if calibration is Calibration.ONLINE and method.reads_direct:
            # Before the reads: a request is calibrated against one prior.
            prior_key, prior = self.calibrator.task_prior(task, options, mode)
        orders = scoring.resolve_label_orders(
            options.label_orders,
            combined=method is Method.COMBINED,
            labels=len(task.labels),
            pruned=mode is Mode.PRUNED,
        )
        log_label_prior = tuple(scoring.log_label_prior(options.label_prior))
        return RequestContext(task, prepared, options, mode, calibration, method,
                              prior_key=prior_key, prior=prior, label_orders=orders,
                              log_label_prior=log_label_prior)  # fmt: skip

    async def _scores(
        self, ctx: RequestContext, texts: Sequence[str]
    ) -> tuple[DirectScores | None, list[ChannelScores] | None]:
        """The texts' direct scores and channel log-probs (None where the method does not
        read them)."""
        offsets = None
        if ctx.method.reads_direct and ctx.mode is Mode.PRUNED:
            # Before admission: the vectors' own reads admit themselves.
            offsets = await self.calibrator.offsets(ctx)
            offsets = scoring.pruning_offsets(offsets, ctx.log_label_prior, ctx.options.temperature)
        contexts = self.direct.contexts(ctx) if ctx.method.reads_direct else []
        shortlist = self._shortlist_size(ctx)
        per_text = self.direct.reads_per_text(contexts)
        if ctx.method.reads_channel:
            per_text += self.channel.reads_per_text(ctx.task, shortlist)
        # A batch is admitted whole or not at all: no half-done batch holds engine time.
        with self.budget.hold(len(texts) * per_text):
            if shortlist:  # the channel reads follow the direct read's ranking
                reads = await self.direct.read(contexts, texts, offsets)
                direct = await self.direct.calibrate(contexts, reads)
                return direct, await self._channel_reads(ctx, texts, direct.calibrated, shortlist)
            reads, channels = await asyncio.gather(
                self.direct.read(contexts, texts, offsets), self._channel_reads(ctx, texts)
            )
        if not contexts:
            return None, channels
        # Calibration reads admit themselves, outside the texts' places.
        return await self.direct.calibrate(contexts, reads), channels

    def _shortlist_size(self, ctx: RequestContext) -> int:
        """How many labels COMBINED reads the channel for; 0: all of them, alongside the
        direct reads."""
        size = ctx.options.channel_shortlist or self.channel_shortlist
        if ctx.method is Method.COMBINED and 0 < size < len(ctx.task.labels):
            return size
        return 0

    async def _channel_reads(
        self,
        ctx: RequestContext,
        texts: Sequence[str],
        calibrated: Sequence[Sequence[float]] = (),
        shortlist: int = 0,
    ) -> list[ChannelScores] | None:
        """Every label's channel, or (``shortlist``) that many labels', each text's best by
        its calibrated direct scores."""
        if not ctx.method.reads_channel:
            return None
        labels: list[list[int] | None] = [None] * len(texts)
        if shortlist:
            labels = [scoring.shortlist(scores, shortlist) for scores in calibrated]
        reads = (
            self.channel.read_text(ctx.task, t, ctx.options, lb)
            for t, lb in zip(texts, labels, strict=True)
        )
        return list(await asyncio.gather(*reads))

    async def score_completion(self, request: CompletionRequest) -> ScoredCompletion:
        """Per-token log-probabilities of a completion after a prompt, in one forward pass."""
        return await self.completions.score(request)
