"""Pure math on label log-probabilities: chain rule, normalization, calibration and signals.

Everything works in natural-log space on plain floats; nothing here imports
vLLM or grpc, so it is unit-tested in milliseconds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass


class LengthNorm(enum.Enum):
    SUM = "sum"
    MEAN = "mean"


class Calibration(enum.Enum):
    NONE = "none"
    CONTEXTUAL = "contextual"
    DOMAIN_PMI = "domain_pmi"
    BATCH = "batch"
    ONLINE = "online"  # CONTEXTUAL, moved towards the prior of the task's texts scored so far
    AUTO = "auto"  # see resolve_calibration


# Batch calibration estimates the label prior from the batch itself; below this many
# texts the estimate is too noisy and contextual calibration is used instead.
MIN_BATCH_FOR_BATCH_CALIBRATION = 8

# Online calibration (README, "The online prior"): after n texts of a task, a text's direct
# scores are (1 - w) x contextually calibrated + w x (log-normalized scores - the mean of the
# task's earlier log-normalized scores), w = n / (n + ONLINE_PRIOR_STRENGTH). Chosen by
# leave-one-dataset-out with the pool below; with two labels the content-free prior did at
# least as well, so AUTO uses the online prior from three labels on.
ONLINE_PRIOR_STRENGTH = 1.0
MIN_LABELS_FOR_ONLINE_PRIOR = 3


def resolve_calibration(
    calibration: Calibration,
    batch_size: int,
    known_offsets: bool = False,
    *,
    with_channel: bool = False,
    labels: int = 0,
) -> Calibration:
    """AUTO becomes BATCH for a large enough batch, else CONTEXTUAL; BATCH needs 2 texts.

    ``known_offsets``: the scoring needs calibration offsets before the texts are read
    (PRUNED's bounds), so AUTO stays CONTEXTUAL: batch offsets depend on the batch's scores.
    ``with_channel``: the direct scores are pooled with the noisy channel's, and AUTO is
    ONLINE for ``labels`` >= MIN_LABELS_FOR_ONLINE_PRIOR, else CONTEXTUAL, whatever the
    batch size (the pooled defaults were chosen on single texts).
    """
    if calibration is Calibration.AUTO and known_offsets:
        return Calibration.CONTEXTUAL
    if calibration is Calibration.AUTO and with_channel:
        if labels >= MIN_LABELS_FOR_ONLINE_PRIOR:
            return Calibration.ONLINE
        return Calibration.CONTEXTUAL
    if calibration is Calibration.AUTO:
        if batch_size >= MIN_BATCH_FOR_BATCH_CALIBRATION:
            return Calibration.BATCH
        return Calibration.CONTEXTUAL
    if calibration is Calibration.BATCH and batch_size < 2:
        return Calibration.NONE  # a batch of one has no batch statistics
    return calibration


def resolve_label_orders(requested: int, *, combined: bool, labels: int, pruned: bool) -> int:
    """The direct read's label orders: as requested, else 2 for COMBINED with two labels
    (chosen for that case: README, "Two labels"), else 1. PRUNED reads one order."""
    if pruned:
        return 1
    if requested:
        return requested
    return 2 if combined and labels == 2 else 1


class Method(enum.Enum):
    """Which way the model is asked: P(label | text), P(text | label), or both."""

    DIRECT = "direct"
    CHANNEL = "channel"
    COMBINED = "combined"

    @property
    def reads_direct(self) -> bool:
        return self is not Method.CHANNEL

    @property
    def reads_channel(self) -> bool:
        return self is not Method.DIRECT


@dataclass(frozen=True)
class PoolWeights:
    """The pool of the direct read and the channel: softmax((direct + w(n) x channel) / T),
    w(n) = channel_scale / ln(n + 1) for a text of n tokens: the channel's log-prob sums over
    the text's tokens, whose evidence is far from independent, so a fixed weight would make
    long texts overconfident and short ones timid."""

    channel_scale: float
    temperature: float

    def channel_weight(self, text_tokens: int) -> float:
        return self.channel_scale / math.log(max(text_tokens, 1) + 1)


# Both chosen by leave-one-dataset-out on held-out log-loss. The direct read of one label
# order (README, "The pool"; checked on a second model family): the channel weighs 1 at
# about 6 tokens, 0.43 at 100.
ONE_ORDER_POOL = PoolWeights(channel_scale=2.0, temperature=1.4)
# The direct read averaged over both label orders (two labels, by default; README, "Two
# labels": chosen over nine two-label sets of two models): with the order bias gone it is
# the stronger voice, and the channel's share is smaller.
BOTH_ORDERS_POOL = PoolWeights(channel_scale=0.625, temperature=0.85)


def pool_for(label_orders: int) -> PoolWeights:
    return BOTH_ORDERS_POOL if label_orders == 2 else ONE_ORDER_POOL


def combined_scores(
    direct: Sequence[float] | None,
    channel: Sequence[float] | None,
    text_tokens: int,
    pool: PoolWeights = ONE_ORDER_POOL,
) -> list[float]:
    """What is normalized over the labels: the direct scores (calibrated), the channel
    log-probabilities log P(text | label) of a text of ``text_tokens`` tokens, or, with both,
    their pool: a logarithmic opinion pool whose channel weight falls with the text's
    length, at the pool's temperature."""
    if direct is None and channel is None:
        raise ValueError("no scores to combine")
    if channel is None:
        return list(direct)  # type: ignore[arg-type]
    if direct is None:
        return list(channel)
    weight = pool.channel_weight(text_tokens)
    pairs = zip(direct, channel, strict=True)
    return [(d + weight * c) / pool.temperature for d, c in pairs]


def mean_of_orders(forward: Sequence[float], backward: Sequence[float]) -> list[float]:
    """The mean of two reads' label log-distributions (each normalized over the labels),
    ``backward`` already in ``forward``'s label order."""
    pairs = zip(log_normalize(forward), log_normalize(backward), strict=True)
    return [(f + b) / 2 for f, b in pairs]


def shortlist(scores: Sequence[float], size: int) -> list[int]:
    """The indexes of the ``size`` best scores, best first (ties: the earlier label)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:size]


def impute_unread(read: dict[int, float], labels: int) -> list[float]:
    """Channel log-probs of ``labels`` labels from those read (by index): an unread label
    gets the lowest one read, so it ranks below every label read, never above."""
    floor = min(read.values())
    return [read.get(i, floor) for i in range(labels)]


class Decision(enum.Enum):
    NONE = "none"
    ACCEPT = "accept"
    ABSTAIN = "abstain"


@dataclass(frozen=True)
class Thresholds:
    """0 disables a threshold."""

    min_top_probability: float = 0.0
    min_margin: float = 0.0
    min_label_mass: float = 0.0

    def any(self) -> bool:
        return bool(self.min_top_probability or self.min_margin or self.min_label_mass)


@dataclass(frozen=True)
class Signals:
    """Confidence signals of one normalized label distribution."""

    top_index: int
    entropy: float
    margin: float
    label_mass: float


def sequence_logprob(token_logprobs: Sequence[float]) -> float:
    """Chain rule: log P(t1..tn) = sum of log P(ti | prompt, t<i)."""
    return math.fsum(token_logprobs)


def normalized(logprob: float, n_tokens: int, norm: LengthNorm) -> float:
    """A label's score from its sequence log-probability: the sum, or the mean per token."""
    if norm is LengthNorm.MEAN:
        return logprob / max(n_tokens, 1)
    return logprob


def logsumexp(values: Sequence[float]) -> float:
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(math.fsum(math.exp(v - peak) for v in values))


def softmax(scores: Sequence[float]) -> list[float]:
    """Normalizes scores over the labels; all -inf gives a uniform distribution."""
    total = logsumexp(scores)
    if total == -math.inf:
        return [1.0 / len(scores)] * len(scores)
    return [math.exp(s - total) for s in scores]


def entropy(probabilities: Sequence[float]) -> float:
    """Shannon entropy in nats."""
    return -math.fsum(p * math.log(p) for p in probabilities if p > 0.0)


def margin(probabilities: Sequence[float]) -> float:
    """Top probability minus the runner-up's (the top one alone when there is one label)."""
    ordered = sorted(probabilities, reverse=True)
    return ordered[0] - (ordered[1] if len(ordered) > 1 else 0.0)


def label_mass(raw_logprobs: Sequence[float]) -> float:
    """Total raw probability the model put on the labels' token sequences."""
    return min(1.0, math.fsum(math.exp(lp) for lp in raw_logprobs))


def signals(probabilities: Sequence[float], raw_logprobs: Sequence[float]) -> Signals:
    top = max(range(len(probabilities)), key=probabilities.__getitem__)
    return Signals(top, entropy(probabilities), margin(probabilities), label_mass(raw_logprobs))


def decide(sig: Signals, top_probability: float, thresholds: Thresholds) -> Decision:
    """ACCEPT when every threshold set holds, ABSTAIN when one fails, NONE without thresholds."""
    if not thresholds.any():
        return Decision.NONE
    holds = (
        top_probability >= thresholds.min_top_probability
        and sig.margin >= thresholds.min_margin
        and sig.label_mass >= thresholds.min_label_mass
    )
    return Decision.ACCEPT if holds else Decision.ABSTAIN


def log_label_prior(shares: Sequence[float]) -> list[float]:
    """The log of each label's expected share, the shares normalized to sum to 1: added to
    scores that treat the labels as equally likely, it re-weights them by Bayes' rule."""
    total = sum(shares)
    return [math.log(share / total) for share in shares]


def final_scores(
    scores: Sequence[float], log_prior: Sequence[float], temperature: float = 1.0
) -> list[float]:
    """What is normalized over the labels: the pooled scores divided by the caller's
    temperature, then re-weighted by a label prior (its log shares): the prior is a base
    rate, not evidence, so the temperature leaves it be."""
    tempered = [s / temperature for s in scores]
    if not log_prior:
        return tempered
    return [s + p for s, p in zip(tempered, log_prior, strict=True)]


def pruning_offsets(
    calibration: Sequence[float] | None, log_label_prior: Sequence[float], temperature: float = 1.0
) -> list[float] | None:
    """What PRUNED's bounds subtract from each label's score so that they rank labels as the
    final scores will: calibration's offsets, less the label prior's log shares times the
    temperature (the final score is score / T + log share: ranked as score + T x log share)."""
    if not log_label_prior:
        return None if calibration is None else list(calibration)
    base = calibration if calibration is not None else [0.0] * len(log_label_prior)
    return [c - temperature * p for c, p in zip(base, log_label_prior, strict=True)]


def log_normalize(scores: Sequence[float]) -> list[float]:
    """Log of the softmax: scores as log-probabilities over the labels."""
    total = logsumexp(scores)
    return [s - total for s in scores]


def contextual_calibrated(
    scores: Sequence[float], content_free: Sequence[Sequence[float]]
) -> list[float]:
    """Calibrate Before Use (Zhao et al. 2021): divide out the mean content-free label distribution.

    ``content_free`` holds the label scores of each content-free input; their
    normalized distributions are averaged, and the text's distribution is
    divided by it (a subtraction in log space), which cancels the prior bias.
    """
    log_prior = contextual_log_prior(content_free)
    return [s - lp for s, lp in zip(log_normalize(scores), log_prior, strict=True)]


def contextual_log_prior(content_free: Sequence[Sequence[float]]) -> list[float]:
    """Log of the mean normalized label distribution over the content-free inputs."""
    mean_prior = [0.0] * len(content_free[0])
    for row in content_free:
        for i, p in enumerate(softmax(row)):
            mean_prior[i] += p / len(content_free)
    return [math.log(max(p, 1e-12)) for p in mean_prior]


def online_weight(seen: int, strength: float = ONLINE_PRIOR_STRENGTH) -> float:
    """How far online calibration moves towards the task's prior after ``seen`` texts."""
    return seen / (seen + strength)


def online_calibrated(
    scores: Sequence[float],
    contextual: Sequence[float],
    task_prior: Sequence[float] | None,
    seen: int,
    strength: float = ONLINE_PRIOR_STRENGTH,
) -> list[float]:
    """Contextual calibration moved towards an estimate of the task's own prior.

    ``task_prior`` is the mean log-normalized label scores of the ``seen`` texts scored
    earlier for the same task; the text's log-normalized scores minus it correct the label
    bias the model shows on this task's real texts, which content-free inputs only
    approximate. The weight grows with the evidence: seen / (seen + strength).
    """
    if task_prior is None or seen <= 0:
        return list(contextual)
    own = log_normalize(scores)
    # Contextual calibration subtracted the content-free log prior from ``own``.
    content_free = [s - c for s, c in zip(own, contextual, strict=True)]
    log_prior = online_log_prior(content_free, task_prior, seen, strength)
    return [s - p for s, p in zip(own, log_prior, strict=True)]


def online_log_prior(
    content_free_log_prior: Sequence[float],
    task_prior: Sequence[float] | None,
    seen: int,
    strength: float = ONLINE_PRIOR_STRENGTH,
) -> list[float]:
    """What online calibration subtracts from log-normalized scores (PRUNED's offsets): the
    content-free log prior moved towards the task's prior, by seen / (seen + strength)."""
    if task_prior is None or seen <= 0:
        return list(content_free_log_prior)
    weight = online_weight(seen, strength)
    return [
        (1.0 - weight) * c + weight * p
        for c, p in zip(content_free_log_prior, task_prior, strict=True)
    ]


def pmi_calibrated(scores: Sequence[float], premise_scores: Sequence[float]) -> list[float]:
    """Domain-conditional PMI (Holtzman et al. 2021): log P(label|text) - log P(label|premise)."""
    return [s - p for s, p in zip(scores, premise_scores, strict=True)]


def batch_calibrated(batch_scores: Sequence[Sequence[float]]) -> list[list[float]]:
    """Batch Calibration (Zhou et al. 2023): divide out the batch's mean label distribution.

    The mean of P(label | text) over the batch estimates the contextual prior;
    each text's distribution is divided by it (a subtraction in log space).
    """
    mean_prior = [0.0] * len(batch_scores[0])
    for row in batch_scores:
        for i, p in enumerate(softmax(row)):
            mean_prior[i] += p / len(batch_scores)
    log_prior = [math.log(max(p, 1e-12)) for p in mean_prior]
    return [
        [s - lp for s, lp in zip(log_normalize(row), log_prior, strict=True)]
        for row in batch_scores
    ]


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def yes_no_logit(yes_logprobs: Sequence[float], no_logprobs: Sequence[float]) -> float:
    """log P(yes) - log P(no), each summed over its surface forms ("Yes", "yes")."""
    return logsumexp(yes_logprobs) - logsumexp(no_logprobs)


def binary_entropy(p: float) -> float:
    return entropy([p, 1.0 - p])


def contextual_calibrated_logits(
    logits: Sequence[float], content_free: Sequence[Sequence[float]]
) -> list[float]:
    """Calibrate Before Use for yes/no labels: divide out the mean content-free P(yes)."""
    out = []
    for i, logit in enumerate(logits):
        prior = math.fsum(sigmoid(row[i]) for row in content_free) / len(content_free)
        prior = min(max(prior, 1e-6), 1.0 - 1e-6)
        out.append(logit - math.log(prior / (1.0 - prior)))
    return out
