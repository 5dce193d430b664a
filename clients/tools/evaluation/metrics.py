"""Classification metrics: small pure functions over truths, predictions, confidences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from labelprob.server import scoring

ECE_BINS = 10


def confusion_matrix(
    truths: Sequence[str], predictions: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts, rows = true label, columns = predicted label, both in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, predicted in zip(truths, predictions, strict=True):
        matrix[index[truth]][index[predicted]] += 1
    return matrix


def accuracy(matrix: Sequence[Sequence[int]]) -> float | None:
    total = sum(map(sum, matrix))
    return sum(matrix[i][i] for i in range(len(matrix))) / total if total else None


def per_label_scores(
    matrix: Sequence[Sequence[int]], labels: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Precision, recall, F1 and support of each label; None where undefined (0/0)."""
    scores: dict[str, dict[str, float | int | None]] = {}
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        denominator = support + predicted  # = 2tp + fp + fn
        scores[label] = {
            "precision": tp / predicted if predicted else None,
            "recall": tp / support if support else None,
            "f1": 2 * tp / denominator if denominator else None,
            "support": support,
        }
    return scores


def macro_f1(matrix: Sequence[Sequence[int]]) -> float | None:
    """Unweighted mean F1 over the labels that are true or predicted at least once.

    A label that is true but never predicted scores 0 and counts. A label absent from both
    (possible with a --limit sample or a wider --labels) has no F1 and is left out, as in
    scikit-learn's default; counting it as 0 would keep a perfect classifier below 1.
    """
    f1s = []
    for i in range(len(matrix)):
        denominator = sum(matrix[i]) + sum(row[i] for row in matrix)
        if denominator:
            f1s.append(2 * matrix[i][i] / denominator)
    return sum(f1s) / len(f1s) if f1s else None


def confidence_bin(confidence: float, bins: int = ECE_BINS) -> int:
    """The equal-width bin [i/bins, (i+1)/bins) a confidence falls in, the last closed at 1."""
    return min(max(math.floor(confidence * bins), 0), bins - 1)


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> list[dict[str, Any]]:
    """Equal-width confidence bins [i/bins, (i+1)/bins), the last one closed at 1: count,
    mean confidence and accuracy of each (None for an empty bin)."""
    counts = [0] * bins
    confidence_sums = [0.0] * bins
    hits = [0] * bins
    for confidence, ok in zip(confidences, correct, strict=True):
        b = confidence_bin(confidence, bins)
        counts[b] += 1
        confidence_sums[b] += confidence
        hits[b] += bool(ok)
    return [
        {
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "count": counts[b],
            "confidence": confidence_sums[b] / counts[b] if counts[b] else None,
            "accuracy": hits[b] / counts[b] if counts[b] else None,
        }
        for b in range(bins)
    ]


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> float | None:
    """ECE (Guo et al. 2017): sum over bins of (bin share) x |accuracy - mean confidence|,
    on the top label's probability."""
    total = len(confidences)
    if total == 0:
        return None
    return sum(
        row["count"] / total * abs(row["accuracy"] - row["confidence"])
        for row in reliability_bins(confidences, correct, bins)
        if row["count"]
    )


def calibrated_ece(confidences: Sequence[float], bins: int = ECE_BINS) -> float | None:
    """The ECE a perfectly calibrated model would show, on average, with these confidences
    on this many texts: its sampling noise, the floor a measured ECE is read against (60
    texts: about 0.1; the floor falls as one over the square root of the count).

    Each text is right with probability its confidence; a bin's hits are then a sum of
    independent Bernoulli draws (Poisson-binomial), whose distribution a dynamic programme
    gives exactly, so the expectation of each bin's |accuracy - mean confidence| is exact.
    """
    total = len(confidences)
    if total == 0:
        return None
    members: list[list[float]] = [[] for _ in range(bins)]
    for confidence in confidences:
        members[confidence_bin(confidence, bins)].append(confidence)
    floor = 0.0
    for group in members:
        if not group:
            continue
        count, mean_confidence = len(group), sum(group) / len(group)
        gap = sum(
            p * abs(k / count - mean_confidence) for k, p in enumerate(hit_distribution(group))
        )
        floor += count / total * gap
    return floor


def hit_distribution(probabilities: Sequence[float]) -> list[float]:
    """P(exactly k of independent events happen), k = 0..n, each event's probability given
    (the Poisson-binomial distribution), one event at a time."""
    hits = [1.0]
    for p in probabilities:
        hits = [
            (hits[k] if k < len(hits) else 0.0) * (1 - p) + (hits[k - 1] * p if k else 0.0)
            for k in range(len(hits) + 1)
        ]
    return hits


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean_of_all(values: Sequence[float | None]) -> float | None:
    """The mean, or None when a value is missing: a mean over some datasets only would not
    compare with the other configs' means."""
    known = [v for v in values if v is not None]
    return mean(known) if len(known) == len(values) else None


def points_delta(value: float | None, peer: float | None) -> float | None:
    """Difference in percentage points, None when either side is unknown."""
    return None if value is None or peer is None else (value - peer) * 100


# The temperatures a fit may return: far past any useful softening or sharpening.
FIT_TEMPERATURE_RANGE = (0.05, 20.0)


def tempered_log_probs(row: Sequence[float], temperature: float) -> list[float]:
    """A text's probabilities raised to 1 / T and renormalized, as logs: what the server's
    ``temperature`` T does to them."""
    return scoring.log_normalize([math.log(max(p, 1e-300)) / temperature for p in row])


def tempered_log_loss(
    probabilities: Sequence[Sequence[float]], truths: Sequence[int], temperature: float
) -> float:
    """Mean negative log-probability of the true labels at temperature T."""
    losses = [
        -tempered_log_probs(row, temperature)[truth]
        for row, truth in zip(probabilities, truths, strict=True)
    ]
    return sum(losses) / len(losses)


def fit_temperature(
    probabilities: Sequence[Sequence[float]], truths: Sequence[int], iterations: int = 60
) -> float | None:
    """The temperature of lowest log-loss on labelled texts (each text's probabilities in
    label order, the index of its true label), or None without two texts. The loss is
    convex in 1 / T, so a golden-section search over 1 / T finds its minimum."""
    if len(truths) < 2:
        return None
    low, high = 1 / FIT_TEMPERATURE_RANGE[1], 1 / FIT_TEMPERATURE_RANGE[0]
    golden = (math.sqrt(5) - 1) / 2

    def loss(inverse: float) -> float:
        return tempered_log_loss(probabilities, truths, 1 / inverse)

    # Each step keeps one inner point and its loss, and computes the loss at one new point.
    a, b = high - golden * (high - low), low + golden * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(iterations):
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - golden * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + golden * (high - low)
            loss_b = loss(b)
    return 2 / (low + high)
