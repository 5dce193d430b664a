"""Multi-label: an independent probability per label, P(yes) / (P(yes) + P(no)) from one
yes/no read per label, the text first so every label's read after the first is cached."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from labelprob.server import labels as label_plan
from labelprob.server import scoring
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.classify.calibration import (
    CalibrationCache,
    YesNoContentFreeKey,
    content_free_inputs,
)
from labelprob.server.classify.prepare import PreparedMultiLabel, TaskPreparer
from labelprob.server.classify.types import (
    Classification,
    LabelResult,
    Options,
    ReadEngine,
    Task,
    TokenScore,
    Usage,
)
from labelprob.server.errors import InvalidArgument
from labelprob.server.labels import Mode, Read
from labelprob.server.scoring import Calibration

MULTI_LABEL_CALIBRATIONS = (Calibration.NONE, Calibration.CONTEXTUAL)


@dataclass(frozen=True)
class YesNoReads:
    """One text's yes/no reads: a logit per label and what they cost."""

    logits: list[float]  # log P(yes) - log P(no), per label
    yes_no_logprobs: list[tuple[float, float]]  # (log P(yes), log P(no)), per label
    usage: Usage
    truncated: bool


@dataclass(frozen=True)
class MultiLabelContext:
    task: Task
    prepared: PreparedMultiLabel
    options: Options
    calibration: Calibration


class MultiLabelClassifier:
    def __init__(
        self,
        engine: ReadEngine,
        preparer: TaskPreparer,
        budget: ReadBudget,
        cache: CalibrationCache,
        default_calibration: Calibration,
    ) -> None:
        self.engine = engine
        self.preparer = preparer
        self.budget = budget
        self.cache = cache
        self.default_calibration = default_calibration

    async def read_yes_no(
        self, prepared: PreparedMultiLabel, text: str, options: Options
    ) -> YesNoReads:
        """One yes/no read per label; the first fills the prefix cache with the text."""
        reserved = len(prepared.head_ids) + max(len(t) for t in prepared.label_tails) + 1
        text_ids, truncated = self.preparer.fit_text(
            text, reserved, truncate=self.preparer.truncates(options)
        )
        shared = [*prepared.head_ids, *text_ids]
        answers = [*prepared.yes_ids, *prepared.no_ids]
        usage = Usage()

        async def answer_logprobs(tail: tuple[int, ...]) -> list[float]:
            """Sequence log-probs of every yes/no surface form after one label's question."""
            prompt = [*shared, *tail]

            async def run(read: Read) -> tuple[Read, dict[int, float]]:
                result = await self.engine.read(
                    [*prompt, *read.prefix], read.candidates, cache_salt=options.cache_salt
                )
                usage.add(Usage(result.prompt_tokens, result.cached_tokens, 1))
                return read, result.logprobs

            done = await asyncio.gather(*(run(r) for r in prepared.reads))
            merged = label_plan.merge_reads(done)
            per_token = label_plan.label_token_logprobs(answers, Mode.FULL, merged)
            return [scoring.sequence_logprob(t) for t in per_token]

        with self.budget.hold(len(prepared.label_tails) * len(prepared.reads)):
            # The first label's reads put the text in the prefix cache for all the others.
            first = await answer_logprobs(prepared.label_tails[0])
            rest = await asyncio.gather(*(answer_logprobs(t) for t in prepared.label_tails[1:]))
        n_yes = len(prepared.yes_ids)
        logits, yes_no = [], []
        for row in [first, *rest]:
            yes, no = row[:n_yes], row[n_yes:]
            logits.append(scoring.yes_no_logit(yes, no))
            yes_no.append((scoring.logsumexp(yes), scoring.logsumexp(no)))
        return YesNoReads(logits, yes_no, usage, truncated)

    async def classify(
        self, task: Task, texts: Sequence[str], options: Options
    ) -> list[Classification]:
        prepared = self.preparer.prepare_multi_label(task)
        calibration = scoring.resolve_calibration(
            options.calibration or self.default_calibration, batch_size=1
        )
        if calibration not in MULTI_LABEL_CALIBRATIONS:
            raise InvalidArgument(
                "options.calibration", "multi-label supports NONE and CONTEXTUAL calibration"
            )
        ctx = MultiLabelContext(task, prepared, options, calibration)
        runs = await asyncio.gather(*(self.read_yes_no(prepared, t, options) for t in texts))
        cf_rows = await self._content_free_logits(ctx)
        return [self._result(ctx, run, cf_rows) for run in runs]

    async def _content_free_logits(self, ctx: MultiLabelContext) -> list[list[float]]:
        if ctx.calibration is not Calibration.CONTEXTUAL:
            return []
        rows = []
        for text in content_free_inputs(ctx.options):
            key = YesNoContentFreeKey(ctx.task, text, ctx.options.cache_salt)

            async def compute(t: str = text) -> list[float]:
                # An empty input is a space: the text slot must hold a token.
                return (await self.read_yes_no(ctx.prepared, t or " ", ctx.options)).logits

            rows.append(await self.cache.get(key, compute))
        return rows

    def _result(
        self, ctx: MultiLabelContext, run: YesNoReads, cf_rows: list[list[float]]
    ) -> Classification:
        logits, yes_no = run.logits, run.yes_no_logprobs
        calibrated = (
            scoring.contextual_calibrated_logits(logits, cf_rows) if cf_rows else list(logits)
        )
        probabilities = [scoring.sigmoid(x) for x in calibrated]
        yes_first = ctx.prepared.yes_ids[0][0]
        yes_token = self.engine.decode_token(yes_first)
        labels = tuple(
            LabelResult(
                name=label.name,
                probability=probabilities[i],
                logprob=yes_no[i][0],
                tokens=(TokenScore(yes_first, yes_token, yes_no[i][0]),),
                uncalibrated_probability=scoring.sigmoid(logits[i]),
                score=calibrated[i],
            )
            for i, label in enumerate(ctx.task.labels)
        )
        top = max(range(len(labels)), key=probabilities.__getitem__)
        mass = math.fsum(math.exp(y) + math.exp(n) for y, n in yes_no) / len(yes_no)
        sig = scoring.Signals(
            top_index=top,
            entropy=math.fsum(scoring.binary_entropy(p) for p in probabilities) / len(labels),
            margin=scoring.margin(probabilities),
            label_mass=min(1.0, mass),
        )
        return Classification(
            top_label=labels[top].name,
            labels=labels,
            label_mass=sig.label_mass,
            entropy=sig.entropy,
            margin=sig.margin,
            top_alternatives=(),
            decision=scoring.decide(sig, probabilities[top], ctx.options.thresholds),
            usage=run.usage,
            mode=Mode.FIRST_TOKEN,
            calibration=ctx.calibration,
            truncated=run.truncated,
            selected_labels=tuple(
                lb.name for lb in labels if lb.probability >= ctx.options.multi_label_threshold
            ),
        )
