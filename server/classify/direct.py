"""The direct read of a request's texts, P(label | text), in one label order or in two.

In two orders (the labels as sent, then reversed) each order is read and calibrated on its
own: a prompt that lists the labels in another order is another task, with its own
content-free scores and online prior. Each text's two label distributions are then averaged
in log space, which takes out the lean towards where a label is listed (README, "Two
labels").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from labelprob.server import scoring
from labelprob.server.classify.calibration import Calibrator
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.prepare import TaskPreparer
from labelprob.server.classify.reads import RawScores, ReadExecutor
from labelprob.server.classify.task_prior import EMPTY


@dataclass(frozen=True)
class DirectScores:
    """Per text: the reads of the labels as sent (their usage counts every order's reads),
    the label scores before and after calibration (averaged over the orders)."""

    raws: list[RawScores]
    scores: list[list[float]]
    calibrated: list[list[float]]


class DirectReader:
    """Reads and calibrates a request's direct scores in its label orders."""

    def __init__(
        self, preparer: TaskPreparer, reader: ReadExecutor, calibrator: Calibrator
    ) -> None:
        self.preparer = preparer
        self.reader = reader
        self.calibrator = calibrator

    def contexts(self, ctx: RequestContext) -> list[RequestContext]:
        """The request as sent and, in two orders, with its labels reversed."""
        if ctx.label_orders == 1:
            return [ctx]
        task = replace(ctx.task, labels=ctx.task.labels[::-1])
        prior_key, prior = None, EMPTY
        if ctx.prior_key is not None:
            prior_key, prior = self.calibrator.task_prior(task, ctx.options, ctx.mode)
        prepared = self.preparer.prepare(task)
        return [ctx, replace(ctx, task=task, prepared=prepared, prior_key=prior_key, prior=prior)]

    def reads_per_text(self, contexts: Sequence[RequestContext]) -> int:
        return sum(self.reader.reads_per_text(c.prepared, c.options) for c in contexts)

    async def read(
        self,
        contexts: Sequence[RequestContext],
        texts: Sequence[str],
        offsets: list[float] | None,
    ) -> list[list[RawScores]]:
        """Each order's reads of every text; the caller holds their places in the budget.
        ``offsets`` (PRUNED's, one order only) apply to the labels as sent."""

        async def order(ctx: RequestContext, shift: list[float] | None) -> list[RawScores]:
            reads = (self.reader.read_text(ctx.prepared, t, ctx.options, shift) for t in texts)
            return list(await asyncio.gather(*reads))

        shifts = [offsets] + [None] * (len(contexts) - 1)
        return list(await asyncio.gather(*map(order, contexts, shifts)))

    async def calibrate(
        self, contexts: Sequence[RequestContext], reads: Sequence[list[RawScores]]
    ) -> DirectScores:
        """Each order's scores calibrated as that order's task, then averaged per text."""
        pairs = list(zip(contexts, reads, strict=True))
        scores_by_order = [
            [r.label_scores(ctx.prepared.label_ids, ctx.options.length_norm) for r in raws]
            for ctx, raws in pairs
        ]
        # Both orders' content-free reads (a task's first request) run at once.
        calibrated_by_order = await asyncio.gather(
            *(
                self.calibrator.calibrate(ctx, raws, scores)
                for (ctx, raws), scores in zip(pairs, scores_by_order, strict=True)
            )
        )
        orders = list(zip(scores_by_order, calibrated_by_order, strict=True))
        raws = reads[0]
        if len(orders) == 1:
            return DirectScores(raws, *orders[0])
        (scores, calibrated), (back_scores, back_calibrated) = orders
        for raw, back in zip(raws, reads[1], strict=True):
            raw.usage.add(back.usage)
        return DirectScores(raws, merged(scores, back_scores), merged(calibrated, back_calibrated))


def merged(forward: list[list[float]], backward: list[list[float]]) -> list[list[float]]:
    """Per text, the mean of the two orders' log-distributions (``backward`` is read with
    the labels reversed: put back in the labels' order first)."""
    return [scoring.mean_of_orders(f, b[::-1]) for f, b in zip(forward, backward, strict=True)]
