"""Workloads: texts to send (a JSONL file or generated), their true labels, the label set."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelprob.tools.jsonl import read_text_rows


@dataclass
class Workload:
    """Texts to send, their true labels when known, and the candidate label set."""

    texts: list[str]
    truths: list[str | None]
    labels: list[str]
    source: str

    @property
    def labeled(self) -> bool:
        return any(t is not None for t in self.truths)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "texts": len(self.texts),
            "labels": self.labels,
            "labeled": self.labeled,
        }


def parse_jsonl_workload(
    lines: Iterable[str], labels: Sequence[str] | None = None, source: str = "<jsonl>"
) -> Workload:
    """Rows `{"text": ..., "label": ...}`; the label set is the file's sorted distinct labels
    unless `labels` is given."""
    texts: list[str] = []
    truths: list[str | None] = []
    for _, row in read_text_rows(lines, source):
        label = row.get("label")
        texts.append(row["text"])
        truths.append(None if label is None else str(label))
    if not texts:
        raise ValueError(f"{source}: no texts")
    label_set = list(labels) if labels else sorted({t for t in truths if t is not None})
    if not label_set:
        raise ValueError(f"{source}: rows have no labels; give --labels")
    return Workload(texts, truths, label_set, source)


def load_jsonl_workload(path: Path, labels: Sequence[str] | None = None) -> Workload:
    with path.open(encoding="utf-8") as stream:
        return parse_jsonl_workload(stream, labels, source=str(path))


# A word list reads better as one string than as a 57-line list literal.
WORDS = (  # noqa: SIM905
    "the service model label text request server latency reads prompt token queue "
    "customer order delivery payment refund account weather music alarm calendar news "
    "market team match film review great poor slow fast today tomorrow please again "
    "because although really quite never always with without about into over"
).split()


def generate_workload(count: int, labels: Sequence[str], seed: int = 0) -> Workload:
    """`count` synthetic texts of 6..40 words, reproducible from `seed`; no true labels."""
    if count < 1:
        raise ValueError("--generate needs at least 1 text")
    rng = random.Random(seed)
    texts = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))).capitalize() + "."
        for _ in range(count)
    ]
    return Workload(texts, [None] * count, list(labels), f"generated:{count}")


def shuffled(workload: Workload, seed: int) -> Workload:
    # Data files are often sorted by label; shuffling avoids long same-label runs.
    order = list(range(len(workload.texts)))
    random.Random(seed).shuffle(order)
    return Workload(
        [workload.texts[i] for i in order],
        [workload.truths[i] for i in order],
        workload.labels,
        workload.source,
    )
