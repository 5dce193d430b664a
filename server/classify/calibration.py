"""Calibration: content-free and domain-premise label scores (cached per task), applied to a
request's scores, and the online task priors they teach; PRUNED's offsets, known before any
text is read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from labelprob.server import scoring
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.prepare import PreparedTask, TaskPreparer
from labelprob.server.classify.reads import RawScores, ReadExecutor
from labelprob.server.classify.task_prior import PriorKey, PriorSnapshot, TaskPriors
from labelprob.server.classify.types import Options, Task
from labelprob.server.labels import Mode
from labelprob.server.scoring import Calibration, LengthNorm

DEFAULT_CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
# Calibration vectors kept (per task, input, mode, tenant); the oldest go first.
MAX_CALIBRATION_ENTRIES = 4096


@dataclass(frozen=True)
class ContentFreeKey:
    """Label scores of one content-free input for a task."""

    task: Task
    text: str
    mode: Mode
    length_norm: LengthNorm
    cache_salt: str | None


@dataclass(frozen=True)
class PremiseKey:
    """Label scores under a domain premise (the premise task, without text)."""

    premise_task: Task
    mode: Mode
    length_norm: LengthNorm
    cache_salt: str | None


@dataclass(frozen=True)
class YesNoContentFreeKey:
    """Multi-label: each label's yes/no logit for one content-free input."""

    task: Task
    text: str
    cache_salt: str | None


CalibrationKey = ContentFreeKey | PremiseKey | YesNoContentFreeKey


def content_free_inputs(options: Options) -> tuple[str, ...]:
    return options.content_free_inputs or DEFAULT_CONTENT_FREE_INPUTS


def exact_mode(mode: Mode) -> Mode:
    """The mode calibration vectors are read in: PRUNED's are FULL's (read once per task)."""
    return Mode.FULL if mode is Mode.PRUNED else mode


class CalibrationCache:
    """Computes a calibration vector once per key; concurrent callers share the work, and a
    failed computation is retried by the next caller."""

    def __init__(self, max_entries: int = MAX_CALIBRATION_ENTRIES) -> None:
        self.max_entries = max_entries
        self._futures: dict[CalibrationKey, asyncio.Future[list[float]]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    async def get(
        self, key: CalibrationKey, compute: Callable[[], Awaitable[list[float]]]
    ) -> list[float]:
        future = self._futures.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(compute())
            self._futures[key] = future
            if len(self._futures) > self.max_entries:
                del self._futures[next(iter(self._futures))]
        return list(await asyncio.shield(future))


class Calibrator:
    """Applies a request's calibration to its label scores."""

    def __init__(
        self,
        preparer: TaskPreparer,
        reader: ReadExecutor,
        cache: CalibrationCache,
    ) -> None:
        self.preparer = preparer
        self.reader = reader
        self.cache = cache
        self.priors = TaskPriors()

    def task_prior(
        self, task: Task, options: Options, mode: Mode
    ) -> tuple[PriorKey, PriorSnapshot]:
        """Where a request's online prior is kept, and the prior as the request finds it."""
        key = PriorKey(
            task, exact_mode(mode), options.length_norm, options.cache_salt, options.prior_scope
        )
        return key, self.priors.snapshot(key)

    async def _text_scores(
        self, prepared: PreparedTask, text: str, options: Options, mode: Mode
    ) -> list[float]:
        probe = replace(options, mode=mode, top_alternatives=0)
        raw = await self.reader.read_text_admitted(prepared, text, probe)
        return raw.label_scores(prepared.label_ids, options.length_norm)

    async def content_free_scores(self, ctx: RequestContext, mode: Mode) -> list[list[float]]:
        options = ctx.options
        rows = []
        for text in content_free_inputs(options):
            key = ContentFreeKey(ctx.task, text, mode, options.length_norm, options.cache_salt)
            rows.append(
                await self.cache.get(
                    key, lambda t=text: self._text_scores(ctx.prepared, t, options, mode)
                )
            )
        return rows

    async def premise_scores(self, ctx: RequestContext, mode: Mode) -> list[float]:
        """Label scores under the domain premise alone: the task without labels list or text."""
        options = ctx.options
        premise_task = Task(
            labels=ctx.task.labels,
            instruction=options.domain_premise or ctx.task.instruction,
            template=ctx.task.template,
        )
        premise = self.preparer.prepare(premise_task)
        key = PremiseKey(premise_task, mode, options.length_norm, options.cache_salt)
        return await self.cache.get(key, lambda: self._text_scores(premise, "", options, mode))

    async def calibrate(
        self, ctx: RequestContext, raws: Sequence[RawScores], scores: list[list[float]]
    ) -> list[list[float]]:
        """The calibrated scores of every text of the request, in order."""
        if ctx.calibration is Calibration.NONE:
            return scores
        if ctx.calibration is Calibration.BATCH:
            return scoring.batch_calibrated(scores)
        out = []
        for raw, row in zip(raws, scores, strict=True):
            mode = exact_mode(raw.mode)
            if ctx.calibration is Calibration.DOMAIN_PMI:
                premise = await self.premise_scores(ctx, mode)
                out.append(scoring.pmi_calibrated(row, premise))
                continue
            contextual = scoring.contextual_calibrated(
                row, await self.content_free_scores(ctx, mode)
            )
            if ctx.calibration is Calibration.ONLINE:
                contextual = ctx.prior.calibrated(row, contextual)
            out.append(contextual)
        if ctx.calibration is Calibration.ONLINE and ctx.prior_key is not None:
            # Only exact reads teach the prior: PRUNED leaves some labels' scores as bounds.
            exact = zip(raws, scores, strict=True)
            self.priors.record(ctx.prior_key, [s for r, s in exact if r.mode is not Mode.PRUNED])
        return out

    async def offsets(self, ctx: RequestContext) -> list[float] | None:
        """What calibration subtracts from each label's score, up to a constant: known
        before any text is read for contextual and domain-PMI calibration (per task, cached),
        not for batch calibration, which depends on the whole batch's scores."""
        if ctx.calibration in (Calibration.CONTEXTUAL, Calibration.ONLINE):
            cf = await self.content_free_scores(ctx, Mode.FULL)
            log_prior = scoring.contextual_log_prior(cf)
            if ctx.calibration is Calibration.ONLINE:
                return ctx.prior.log_prior(log_prior)
            return log_prior
        if ctx.calibration is Calibration.DOMAIN_PMI:
            return await self.premise_scores(ctx, Mode.FULL)
        return None
