"""How well a config's confidences rank its own answers: what abstention and cascade routing
need ("answer when confident, escalate otherwise"), whatever the confidences' level (ECE).

Both are pure functions of each answered text's confidence and whether it was right, and
neither depends on the order the texts came in: tied confidences count half a pair
(AUROC) or contribute their group's mean accuracy (coverage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import groupby

HALF = 0.5  # the coverage the report quotes: the more confident half of the texts


def confidence_auroc(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """P(a right answer's confidence > a wrong answer's), ties counted half (the
    Mann-Whitney U statistic over the right/wrong pairs): 0.5 ranks no better than chance,
    1.0 puts every right answer above every wrong one. None without both kinds."""
    pairs = sorted(zip(confidences, correct, strict=True))
    right = sum(ok for _, ok in pairs)
    wrong = len(pairs) - right
    if not right or not wrong:
        return None
    wrong_below = 0.0  # wrong answers less confident than the current group
    wins = 0.0
    for _, group in groupby(pairs, key=lambda pair: pair[0]):
        oks = [ok for _, ok in group]
        group_right = sum(oks)
        group_wrong = len(oks) - group_right
        wins += group_right * (wrong_below + group_wrong / 2)
        wrong_below += group_wrong
    return wins / (right * wrong)


def accuracy_at_coverage(
    confidences: Sequence[float], correct: Sequence[bool], coverage: float = HALF
) -> float | None:
    """Accuracy on the ceil(coverage x n) most confident texts: what a caller that answers
    only that share of its traffic (and escalates the rest) gets. Texts tied with the last
    one kept count in proportion (their group's mean accuracy), so the order they came in
    does not matter. None without texts."""
    if not confidences:
        return None
    keep = max(1, math.ceil(coverage * len(confidences)))
    pairs = sorted(zip(confidences, correct, strict=True), key=lambda pair: -pair[0])
    hits = 0.0
    taken = 0
    for _, group in groupby(pairs, key=lambda pair: pair[0]):
        oks = [ok for _, ok in group]
        share = min(len(oks), keep - taken)
        hits += share * sum(oks) / len(oks)
        taken += share
        if taken == keep:
            break
    return hits / keep
