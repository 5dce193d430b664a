"""Prompt-token accounting through labelprob: FIRST_TOKEN, FULL and PRUNED on HWU64."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labelprob.client import ClassifyParams, Client
from labelprob.client.client import MODES
from labelprob.server.labels import Mode
from labelprob.tools.bench.plan import PromptBuilder
from labelprob.tools.bench.settings import ACCOUNTING_DATASET, REQUEST_TIMEOUT_S
from labelprob.tools.loadtest.workload import Workload
from labelprob.tools.reports import number, text_table
from labelprob.v1 import classifier_pb2 as pb


@dataclass
class ModeUsage:
    """Summed usage of one scoring mode over the accounting texts."""

    mode: str
    texts: int
    reads: int
    prompt_tokens: int
    cached_tokens: int

    @property
    def computed(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def per_text(self, value: float) -> float:
        return value / self.texts if self.texts else 0.0


def equal_length_groups(
    texts: Sequence[str], length: Callable[[str], int], k: int, size: int
) -> list[tuple[str, ...]]:
    """k groups of ``size`` different texts of equal prompt length, one text of each group
    per mode: every mode then sees cold prompts of the same lengths, so their root reads
    cost the same."""
    waiting: dict[int, list[str]] = {}
    groups: list[tuple[str, ...]] = []
    for text in texts:
        key = length(text)
        group = waiting.setdefault(key, [])
        group.append(text)
        if len(group) == size:
            groups.append(tuple(waiting.pop(key)))
            if len(groups) == k:
                break
    return groups


def measure_mode(target: str, labels: Sequence[str], texts: Sequence[str], mode: Mode) -> ModeUsage:
    params = ClassifyParams(
        labels=list(labels),
        options=pb.ScoringOptions(mode=MODES[mode.value], calibration=pb.CALIBRATION_NONE),
    )
    usage = ModeUsage(mode.value, len(texts), 0, 0, 0)
    with Client(target, timeout=REQUEST_TIMEOUT_S) as client:
        # One text at a time, so each text's cache state depends only on what came before.
        for text in texts:
            u = client.classify(text, params).usage
            usage.reads += u.engine_reads
            usage.prompt_tokens += u.prompt_tokens
            usage.cached_tokens += u.cached_prompt_tokens
    return usage


def token_accounting(
    target: str, builder: PromptBuilder, data: Workload, k: int, exclude: set[str]
) -> dict[str, Any]:
    """Up to `k` texts of `data` per mode (none of `exclude`), one request at a time."""
    prepared = builder.prepare(data.labels)
    fresh = [t for t in data.texts if t not in exclude]

    def length(text: str) -> int:
        return len(builder.prompt_ids(prepared, text))

    groups = equal_length_groups(fresh[1:], length, k, size=3)
    first_texts, full_texts, pruned_texts = (list(texts) for texts in zip(*groups, strict=True))
    # The task prefix is the same in every mode: cache it before any is measured.
    measure_mode(target, data.labels, fresh[:1], Mode.FIRST_TOKEN)
    first = measure_mode(target, data.labels, first_texts, Mode.FIRST_TOKEN)
    full = measure_mode(target, data.labels, full_texts, Mode.FULL)
    pruned = measure_mode(target, data.labels, pruned_texts, Mode.PRUNED)
    label_tokens = sum(len(ids) for ids in prepared.label_ids)
    n_labels = len(prepared.label_ids)
    # One full prompt per label (prompt + label, teacher-forced), nothing cached.
    own = sum(n_labels * length(t) + label_tokens for t in first_texts)
    own_usage = ModeUsage("every label its own prompt", len(groups), n_labels * len(groups), own, 0)
    return {
        "dataset": ACCOUNTING_DATASET,
        "labels": n_labels,
        "texts_per_mode": len(groups),
        "modes": [first, full, pruned, own_usage],
        "full_over_first_token": full.computed / first.computed if first.computed else None,
        "pruned_over_first_token": pruned.computed / first.computed if first.computed else None,
        "own_prompts_over_first_token": own / first.computed if first.computed else None,
        "target_full_over_first_token": 1.3,
    }


def accounting_table(acc: dict[str, Any]) -> str:
    rows = [
        [
            u.mode,
            str(u.texts),
            number(u.per_text(u.reads)),
            number(u.per_text(u.prompt_tokens)),
            number(u.per_text(u.computed)),
            f"{u.cached_share:.1%}",
        ]
        for u in acc["modes"]
    ]
    headers = ["mode", "texts", "reads/text", "prompt tok/text", "computed tok/text", "cached"]
    ratio = acc["full_over_first_token"]
    target = acc["target_full_over_first_token"]
    verdict = ""
    if ratio is not None:
        verdict = f" (target <= {target}x: {'met' if ratio <= target else 'NOT met'})"
    own = acc["own_prompts_over_first_token"]
    pruned = acc["pruned_over_first_token"]
    return "\n".join(
        [
            text_table(headers, rows),
            f"FULL / FIRST_TOKEN computed tokens: {number(ratio, 2)}x{verdict}",
            f"PRUNED / FIRST_TOKEN computed tokens: {number(pruned, 2)}x (top label exact)",
            f"own prompts / FIRST_TOKEN computed tokens: {number(own, 1)}x",
        ]
    )
