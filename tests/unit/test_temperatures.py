"""The temperature scan's leave-one-dataset-out on synthetic sets whose truths were drawn at
known temperatures: a set is held out on every model at once, and each pick recovers the
temperature the other sets were drawn at."""

from __future__ import annotations

import math
import random

from labelprob.tools.evaluation.collect import Row
from labelprob.tools.evaluation.temperatures import held_out_name, held_out_table

LABELS = ["a", "b", "c"]
TOKENS = 9
CHANNEL_WEIGHT = 2.0 / math.log(TOKENS + 1)  # the server's pool: 2 / ln(n + 1)


def drawn_at(name: str, temperature: float, count: int, rng: random.Random) -> list[Row]:
    """Rows whose pool at T 1 is z (a flat direct read, the channel z / w) and whose truth is
    drawn from softmax(z / temperature)."""
    rows = []
    for i in range(count):
        z = [rng.gauss(0, 2) for _ in LABELS]
        weights = [math.exp(v / temperature) for v in z]
        truth = rng.choices(LABELS, weights)[0]
        flat = [0.0] * len(LABELS)
        channel = [v / CHANNEL_WEIGHT for v in z]
        rows.append(Row(name, f"text {i}", truth, LABELS, TOKENS, flat, flat, flat, channel))
    return rows


def test_held_out_name_joins_a_set_across_models() -> None:
    assert held_out_name("qwen:bbc_news") == held_out_name("bbc_news") == "bbc_news"


def test_each_pick_is_the_temperature_the_other_sets_were_drawn_at() -> None:
    rng = random.Random(5)
    by_set = {
        "sharp": drawn_at("sharp", 1.0, 1500, rng),
        "qwen:sharp": drawn_at("qwen:sharp", 1.0, 1500, rng),
        "soft": drawn_at("soft", 2.5, 1500, rng),
        "qwen:soft": drawn_at("qwen:soft", 2.5, 1500, rng),
    }
    table = {row[0]: row for row in held_out_table(by_set)}
    for name in ("sharp", "qwen:sharp"):
        picked, own = float(table[name][2]), float(table[name][5])
        assert 2.2 <= picked <= 2.8  # learned on the soft sets only, not on its twin
        assert 0.8 <= own <= 1.2
        assert float(table[name][3]) > float(table[name][6])  # the wrong T shows in its ECE
    for name in ("soft", "qwen:soft"):
        assert 0.8 <= float(table[name][2]) <= 1.2
        assert 2.2 <= float(table[name][5]) <= 2.8
    assert table["(all sets)"][2] not in {"0.8", "3"}  # between the two, not at an edge
