"""Result building: a text's scores turned into a Classification with its signals."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from labelprob.server import scoring
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.reads import RawScores
from labelprob.server.classify.types import Classification, LabelResult, TokenScore

Decode = Callable[[int], str]


@dataclass(frozen=True)
class ScoredText:
    """One text's raw reads, its label scores, and those scores calibrated."""

    raw: RawScores
    scores: list[float]
    calibrated: list[float]


def label_results(ctx: RequestContext, text: ScoredText) -> tuple[LabelResult, ...]:
    raw, prepared = text.raw, ctx.prepared
    uncalibrated = scoring.softmax(text.scores)
    probabilities = scoring.softmax(text.calibrated)
    return tuple(
        LabelResult(
            name=label.name,
            probability=probabilities[i],
            logprob=raw.logprob(i),
            tokens=tuple(
                TokenScore(tid, token, lp)
                for tid, token, lp in zip(
                    prepared.label_ids[i],
                    prepared.label_token_texts[i],
                    raw.token_logprobs[i],
                    strict=False,
                )
            ),
            uncalibrated_probability=uncalibrated[i],
            score=text.calibrated[i],
            estimated=i in raw.estimates,
        )
        for i, label in enumerate(ctx.task.labels)
    )


def build_classification(ctx: RequestContext, text: ScoredText, decode: Decode) -> Classification:
    labels = label_results(ctx, text)
    probabilities = [lb.probability for lb in labels]
    sig = scoring.signals(probabilities, [lb.logprob for lb in labels])
    raw = text.raw
    return Classification(
        top_label=labels[sig.top_index].name,
        labels=labels,
        label_mass=sig.label_mass,
        entropy=sig.entropy,
        margin=sig.margin,
        top_alternatives=tuple(
            TokenScore(tid, decode(tid), lp)
            for tid, lp in raw.top[: max(ctx.options.top_alternatives, 0)]
            if math.isfinite(lp)
        ),
        decision=scoring.decide(sig, probabilities[sig.top_index], ctx.options.thresholds),
        usage=raw.usage,
        mode=raw.mode,
        calibration=ctx.calibration,
        truncated=raw.truncated,
    )
