"""Result building: a text's scores turned into a Classification with its signals."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labelprob.server import scoring
from labelprob.server.classify.channel import ChannelScores
from labelprob.server.classify.context import RequestContext
from labelprob.server.classify.reads import RawScores
from labelprob.server.classify.types import Classification, LabelResult, TokenScore
from labelprob.server.scoring import Calibration

Decode = Callable[[int], str]


@dataclass(frozen=True)
class ScoredText:
    """One text's raw reads, its label scores, those scores calibrated, and its channel
    log-probabilities (None where the method does not read them)."""

    raw: RawScores
    scores: list[float] | None
    calibrated: list[float] | None
    channel: ChannelScores | None = None
    pool: scoring.PoolWeights = scoring.ONE_ORDER_POOL  # how direct and channel are pooled
    log_label_prior: Sequence[float] = ()  # the request's label prior; (): equally likely
    temperature: float = 1.0  # the caller's: divides the final scores

    @property
    def channel_logprobs(self) -> list[float] | None:
        return None if self.channel is None else self.channel.logprobs

    @property
    def text_tokens(self) -> int:
        return 0 if self.channel is None else self.channel.text_tokens  # 0: nothing summed

    @property
    def final(self) -> list[float]:
        """What is normalized over the labels: the pool at the caller's temperature,
        re-weighted by the label prior."""
        pooled = scoring.combined_scores(
            self.calibrated, self.channel_logprobs, self.text_tokens, self.pool
        )
        return scoring.final_scores(pooled, self.log_label_prior, self.temperature)

    @property
    def uncalibrated(self) -> list[float]:
        return scoring.combined_scores(
            self.scores, self.channel_logprobs, self.text_tokens, self.pool
        )


def channel_only(ctx: RequestContext, channel: ChannelScores) -> RawScores:
    """The stand-in for direct reads a CHANNEL request does not make: no label tokens read."""
    labels = len(ctx.task.labels)
    return RawScores([[] for _ in range(labels)], [], channel.usage, ctx.mode, channel.truncated)


def label_results(ctx: RequestContext, text: ScoredText) -> tuple[LabelResult, ...]:
    raw, prepared = text.raw, ctx.prepared
    uncalibrated = scoring.softmax(text.uncalibrated)
    final = text.final
    probabilities = scoring.softmax(final)
    channel = text.channel_logprobs
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
            score=final[i],
            estimated=i in raw.estimates,
            channel_logprob=channel[i] if channel is not None else 0.0,
            channel_estimated=text.channel is not None and i in text.channel.unread,
        )
        for i, label in enumerate(ctx.task.labels)
    )


def build_classification(ctx: RequestContext, text: ScoredText, decode: Decode) -> Classification:
    labels = label_results(ctx, text)
    probabilities = [lb.probability for lb in labels]
    direct = ctx.method.reads_direct
    # Label mass is what the direct read put on the labels: none without a direct read.
    sig = scoring.signals(probabilities, [lb.logprob if direct else -math.inf for lb in labels])
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
        calibration=ctx.calibration if direct else Calibration.NONE,
        truncated=raw.truncated or (text.channel is not None and text.channel.truncated),
        method=ctx.method,
    )
