"""The plan: the prompt ids and label reads every contender computes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelprob.server.classify import Classifier, PreparedTask, Task
from labelprob.server.labels import Mode, Read, TokenIds, plan_reads, resolve_mode
from labelprob.server.prompts import LabelSpec, load_templates
from labelprob.server.tokenization import chat_renderer
from labelprob.tools.bench.settings import DATASETS, ENGINE_ARGS
from labelprob.tools.loadtest.workload import Workload, load_jsonl_workload, shuffled


class TokenizerEngine:
    """The tokenizer side of labelprob's Engine, enough for Classifier to build prompts."""

    def __init__(self, model_path: str) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.model_path = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        # vLLM derives the same context length from the config for this model.
        self.max_model_len: int = AutoConfig.from_pretrained(model_path).max_position_embeddings

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    @property
    def closing_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def chat_renderer(self) -> Callable[[list[dict[str, str]]], str] | None:
        return chat_renderer(self.tokenizer)


class PromptBuilder:
    """labelprob's own prompt path (default template, task cache) on the HF tokenizer."""

    def __init__(self, engine: TokenizerEngine) -> None:
        self.model_path = engine.model_path
        # As the server builds it by default (--align-prompts): FULL prompts padded to a block.
        self.classifier = Classifier(
            engine,  # type: ignore[arg-type]
            load_templates(None),
            align_block=ENGINE_ARGS["block_size"],
        )

    def prepare(self, labels: Sequence[str]) -> PreparedTask:
        return self.classifier.prepare(Task(labels=tuple(LabelSpec(name) for name in labels)))

    def prompt_ids(self, prepared: PreparedTask, text: str, align: bool = False) -> list[int]:
        """The server aligns a prompt when its reads go deeper than the root (FULL)."""
        return self.classifier.prompt_ids(prepared, text, truncate=True, align=align)[0]


@dataclass
class Plan:
    """What every contender computes: the same prompt ids and, per prompt, the same reads."""

    dataset: str
    model_path: str
    labels: list[str]
    mode: Mode
    label_ids: list[TokenIds]
    prefix_len: int  # the task prefix every prompt starts with
    reads: list[Read]  # per text; the roots (empty prefix) come first
    prompts: list[list[int]]  # the measured texts
    warmup: list[list[int]]  # other texts: warm kernels without caching the measured prompts

    @property
    def roots(self) -> list[Read]:
        return [r for r in self.reads if not r.prefix]

    @property
    def deeper(self) -> list[Read]:
        return [r for r in self.reads if r.prefix]

    def prompt_tokens(self, prompts: Sequence[Sequence[int]]) -> int:
        """Prompt tokens the engine is sent for these texts (each read is prompt + prefix)."""
        return sum(len(p) + len(r.prefix) for p in prompts for r in self.reads)

    def spec(self) -> dict[str, Any]:
        """The plan as JSON for a worker subprocess."""
        return {
            "model_path": self.model_path,
            "reads": [[list(r.prefix), list(r.candidates)] for r in self.reads],
            "prompts": self.prompts,
            "warmup": self.warmup,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model_path": self.model_path,
            "labels": len(self.labels),
            "mode": self.mode.value,
            "reads_per_text": len(self.reads),
            "texts": len(self.prompts),
            "mean_prompt_tokens": sum(map(len, self.prompts)) / max(len(self.prompts), 1),
            "shared_prefix_tokens": self.prefix_len,
        }


def load_texts(data_dir: Path, dataset: str, seed: int) -> Workload:
    # The files are sorted by label: shuffle so a prefix of them mixes the labels.
    return shuffled(load_jsonl_workload(data_dir / DATASETS[dataset]), seed)


def build_plan(
    builder: PromptBuilder,
    data: Workload,
    *,
    dataset: str,
    n: int,
    n_warmup: int,
    mode: Mode = Mode.AUTO,
) -> tuple[Plan, Workload, Workload]:
    """The plan for the first `n` texts of `data` and the next `n_warmup`, and those texts
    as loadtest workloads."""
    if n + n_warmup > len(data.texts):
        raise SystemExit(f"{dataset} has {len(data.texts)} texts; asked {n} + {n_warmup} warm-up")
    prepared = builder.prepare(data.labels)
    mode = resolve_mode(mode, prepared.label_ids)
    reads = plan_reads(prepared.label_ids, mode)
    align = any(r.prefix for r in reads)

    def part(lo: int, hi: int) -> Workload:
        return Workload(data.texts[lo:hi], data.truths[lo:hi], data.labels, data.source)

    measured, warm = part(0, n), part(n, n + n_warmup)
    plan = Plan(
        dataset=dataset,
        model_path=builder.model_path,
        labels=data.labels,
        mode=mode,
        label_ids=list(prepared.label_ids),
        prefix_len=len(prepared.prefix_ids),
        reads=reads,
        prompts=[builder.prompt_ids(prepared, t, align) for t in measured.texts],
        warmup=[builder.prompt_ids(prepared, t, align) for t in warm.texts],
    )
    return plan, measured, warm
