"""Labeled JSONL files as evaluation datasets: a seeded sample, the label set."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelprob.tools.jsonl import read_text_rows


def label_shares(truths: Sequence[str], labels: Sequence[str]) -> list[float]:
    """Each label's share of ``truths``, add-one smoothed (a label never seen is not 0)."""
    counts = Counter(truths)
    smoothed = len(truths) + len(labels)
    return [(counts[label] + 1) / smoothed for label in labels]


@dataclass
class Dataset:
    """The sampled rows of one labeled file and its label set."""

    name: str
    source: str
    texts: list[str]
    truths: list[str]
    labels: list[str]
    total_rows: int
    indices: list[int] = field(default_factory=list)  # row numbers in the file, 0-based
    sample: dict[str, Any] = field(default_factory=dict)  # limit, seed, max_chars
    # Each label's share of the whole file, add-one smoothed: the base rates a config with
    # +prior sends as the label prior. A Dataset built by hand gets its own rows' shares.
    file_shares: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.file_shares:
            self.file_shares = label_shares(self.truths, self.labels)

    def describe(self) -> dict[str, Any]:
        counts = Counter(self.truths)
        return {
            "name": self.name,
            "source": self.source,
            "rows": len(self.texts),
            "file_rows": self.total_rows,
            "sample": self.sample,
            # The order of every per-text list in the report (`per_text`).
            "row_indices": self.indices,
            "labels": self.labels,
            "label_counts": {label: counts[label] for label in self.labels},
            "file_shares": dict(zip(self.labels, self.file_shares, strict=False)),
        }


def sample_indices(n: int, limit: int | None, seed: int = 0, skip: int = 0) -> list[int]:
    """A seeded random order of `range(n)`, the first `skip` left out, cut to `limit`.

    The rows are shuffled even without a limit: data files are often sorted by label, and
    batch calibration must not see batches of a single label. A smaller limit with the
    same seed gives a prefix of a larger one, so samples nest; `skip` gives rows disjoint from
    a sample of that size (choose settings on `--skip 200`, report the first 200).
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    order = order[max(skip, 0) :]
    return order if limit is None else order[: max(limit, 0)]


def parse_dataset(
    lines: Iterable[str],
    *,
    name: str,
    source: str = "<jsonl>",
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
    skip: int = 0,
) -> Dataset:
    """Rows `{"text": ..., "label": ...}`. The label set is the file's sorted distinct labels
    unless `labels` is given; then every row's label must be one of them."""
    texts: list[str] = []
    truths: list[str] = []
    for number, row in read_text_rows(lines, source):
        if row.get("label") is None:
            raise ValueError(f'{source}:{number}: no "label"')
        texts.append(row["text"])
        truths.append(str(row["label"]))
    if not texts:
        raise ValueError(f"{source}: no rows")
    label_set = list(dict.fromkeys(labels)) if labels else sorted(set(truths))
    unknown = sorted(set(truths) - set(label_set))
    if unknown:
        # Such a row could never be right: better refuse than report a skewed accuracy.
        raise ValueError(f"{source}: labels not in --labels: {', '.join(unknown[:5])}")
    if len(label_set) < 2:
        raise ValueError(f"{source}: need at least 2 labels, got {label_set}")
    indices = sample_indices(len(texts), limit, seed, skip)
    cut = slice(None) if max_chars is None else slice(0, max_chars)
    return Dataset(
        name=name,
        source=source,
        texts=[texts[i][cut] for i in indices],
        truths=[truths[i] for i in indices],
        labels=label_set,
        total_rows=len(texts),
        indices=indices,
        sample={"limit": limit, "seed": seed, "max_chars": max_chars, "skip": skip},
        file_shares=label_shares(truths, label_set),
    )


def load_dataset(
    path: Path,
    *,
    name: str | None = None,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
    skip: int = 0,
) -> Dataset:
    with path.open(encoding="utf-8") as stream:
        return parse_dataset(
            stream,
            name=name or path.stem,
            source=str(path),
            labels=labels,
            limit=limit,
            seed=seed,
            max_chars=max_chars,
            skip=skip,
        )


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File stems, suffixed `-2`, `-3`... when two files share one (rows and plots are keyed
    by name)."""
    seen: Counter[str] = Counter()
    names = []
    for path in paths:
        seen[path.stem] += 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names
