"""Selective-prediction metrics against brute force: every right/wrong pair for the AUROC,
every order of tied texts for the accuracy at a coverage."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from labelprob.tools.evaluation.selective import accuracy_at_coverage, confidence_auroc


def auroc_by_pairs(confidences: list[float], correct: list[bool]) -> float:
    rights = [c for c, ok in zip(confidences, correct, strict=True) if ok]
    wrongs = [c for c, ok in zip(confidences, correct, strict=True) if not ok]
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in rights for w in wrongs)
    return wins / (len(rights) * len(wrongs))


def coverage_over_every_order(confidences: list[float], correct: list[bool], share: float) -> float:
    """The mean, over every order of the texts, of the accuracy of the first ceil(share x n)
    after a stable sort by confidence: what a caller breaking ties by arrival would get."""
    keep = math.ceil(share * len(confidences))
    results = []
    for order in itertools.permutations(range(len(confidences))):
        ranked = sorted(order, key=lambda i: -confidences[i])  # stable: ties keep the order
        results.append(sum(correct[i] for i in ranked[:keep]) / keep)
    return sum(results) / len(results)


def test_auroc_of_perfect_reversed_and_uninformative_rankings() -> None:
    assert confidence_auroc([0.9, 0.8, 0.3, 0.2], [True, True, False, False]) == 1.0
    assert confidence_auroc([0.9, 0.8, 0.3, 0.2], [False, False, True, True]) == 0.0
    assert confidence_auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5


def test_auroc_needs_a_right_and_a_wrong_answer() -> None:
    assert confidence_auroc([0.9, 0.7], [True, True]) is None
    assert confidence_auroc([0.9, 0.7], [False, False]) is None
    assert confidence_auroc([], []) is None


def test_auroc_equals_the_pair_count_with_ties() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 30)
        confidences = [rng.choice([0.2, 0.4, 0.5, 0.6, 0.9, rng.random()]) for _ in range(n)]
        correct = [rng.random() < c for c in confidences]
        if all(correct) or not any(correct):
            continue
        assert confidence_auroc(confidences, correct) == pytest.approx(
            auroc_by_pairs(confidences, correct)
        )


def test_accuracy_at_coverage_keeps_the_most_confident_texts() -> None:
    confidences = [0.95, 0.2, 0.9, 0.4, 0.8, 0.3]
    correct = [True, True, True, False, False, False]
    assert accuracy_at_coverage(confidences, correct, 0.5) == pytest.approx(2 / 3)
    assert accuracy_at_coverage(confidences, correct, 1 / 6) == 1.0
    assert accuracy_at_coverage(confidences, correct, 1.0) == pytest.approx(0.5)
    assert accuracy_at_coverage([], [], 0.5) is None


def test_accuracy_at_coverage_is_the_mean_over_every_order_of_tied_texts() -> None:
    rng = random.Random(3)
    for _ in range(60):
        n = rng.randint(1, 6)
        confidences = [rng.choice([0.3, 0.6, 0.6, 0.9]) for _ in range(n)]
        correct = [rng.random() < 0.5 for _ in range(n)]
        for share in (0.25, 0.5, 0.75, 1.0):
            assert accuracy_at_coverage(confidences, correct, share) == pytest.approx(
                coverage_over_every_order(confidences, correct, share)
            )


def test_neither_depends_on_the_order_the_texts_came_in() -> None:
    rng = random.Random(11)
    confidences = [rng.choice([0.1, 0.5, 0.7]) for _ in range(40)]
    correct = [rng.random() < c for c in confidences]
    auroc, half = confidence_auroc(confidences, correct), accuracy_at_coverage(confidences, correct)
    pairs = list(zip(confidences, correct, strict=True))
    for _ in range(5):
        rng.shuffle(pairs)
        shuffled_c, shuffled_ok = [c for c, _ in pairs], [ok for _, ok in pairs]
        assert confidence_auroc(shuffled_c, shuffled_ok) == pytest.approx(auroc)
        assert accuracy_at_coverage(shuffled_c, shuffled_ok) == pytest.approx(half)
