"""Task preparation (cached per task) and fitting a text into the context around it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from labelprob.server import labels as label_plan
from labelprob.server.classify.types import Options, ReadEngine, Task
from labelprob.server.errors import InvalidArgument
from labelprob.server.labels import Mode, Read, TokenIds
from labelprob.server.prompts import (
    DEFAULT_TEMPLATE,
    ExampleSpec,
    PromptParts,
    Template,
    multi_label_phrase,
    render_multi_label_parts,
    render_prompt_parts,
    shown_labels,
)

PLANNED_MODES = (Mode.FIRST_TOKEN, Mode.FULL)
# Prepared tasks kept per kind (single- and multi-label); the least recently used go first.
PREPARED_TASKS_CACHED = 512


@dataclass(frozen=True)
class PreparedTask:
    """A task turned into token ids once and reused for every text (cached)."""

    parts: PromptParts
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    label_ids: tuple[TokenIds, ...]
    label_token_texts: tuple[tuple[str, ...], ...]  # decoded once, not per response
    auto_mode: Mode  # what AUTO resolves to for these labels
    reads: dict[Mode, tuple[Read, ...]]  # the read plan of FIRST_TOKEN and FULL
    nodes: dict[TokenIds, tuple[Read, ...]]  # FULL's deeper reads by trie node (PRUNED)
    paths: tuple[TokenIds, ...]  # the label paths that cover FULL's deeper reads

    @property
    def longest_label(self) -> int:
        return max(len(ids) for ids in self.label_ids)

    def concrete_mode(self, mode: Mode) -> Mode:
        return self.auto_mode if mode is Mode.AUTO else mode

    def plan(self, mode: Mode) -> tuple[Read, ...]:
        """The reads of ``mode`` (AUTO resolved); for PRUNED, the most it may read (FULL's
        reads), which is what it is admitted for."""
        concrete = self.concrete_mode(mode)
        return self.reads[Mode.FULL if concrete is Mode.PRUNED else concrete]

    @functools.cached_property
    def label_ends(self) -> frozenset[TokenIds]:
        """The trie nodes whose read completes a label of two tokens or more (PRUNED)."""
        return frozenset(ids[:-1] for ids in self.label_ids if len(ids) > 1)

    @functools.cached_property
    def roots(self) -> tuple[Read, ...]:
        """The reads of the empty prefix, every mode's first (derived once per task)."""
        return tuple(r for r in self.reads[Mode.FULL] if not r.prefix)


@dataclass(frozen=True)
class PreparedMultiLabel:
    """A multi-label task: shared head, per-label question tokens, yes/no answer tokens."""

    head_ids: tuple[int, ...]
    label_tails: tuple[tuple[int, ...], ...]
    yes_ids: tuple[TokenIds, ...]  # token sequences of the "yes" surface forms
    no_ids: tuple[TokenIds, ...]
    # Reads of the yes/no answer trie after each label's prompt: one for most tokenizers.
    reads: tuple[Read, ...]


class FittedText(NamedTuple):
    """Token ids that fit the context, and whether the text was cut to fit."""

    ids: list[int]
    truncated: bool


class TaskPreparer:
    """Renders and tokenizes tasks once (LRU-cached) and fits texts into the context."""

    def __init__(
        self,
        engine: ReadEngine,
        templates: dict[str, Template],
        *,
        default_truncate: bool,
        default_template: str = DEFAULT_TEMPLATE,
        align_block: int = 0,
    ) -> None:
        self.engine = engine
        self.templates = templates
        self.default_template = default_template
        self.default_truncate = default_truncate
        # Block size to align multi-read prompts to (0: off), and the token that pads them.
        self.align_block = align_block
        self.pad_id = engine.encode("\n")[-1] if align_block else 0
        self.chat = engine.chat_renderer()
        self.prepare = functools.lru_cache(PREPARED_TASKS_CACHED)(self._prepare)
        self.prepare_multi_label = functools.lru_cache(PREPARED_TASKS_CACHED)(
            self._prepare_multi_label
        )

    def template_for(self, name: str) -> Template:
        template = self.templates.get(name or self.default_template)
        if template is None:
            raise InvalidArgument(
                "options.template", f"unknown template {name!r}; known: {sorted(self.templates)}"
            )
        return template

    def _prepare(self, task: Task) -> PreparedTask:
        template = self.template_for(task.template)
        labels = shown_labels(template, task.labels)
        wording = {lb.name: shown.name for lb, shown in zip(task.labels, labels, strict=True)}
        examples = tuple(
            ExampleSpec(ex.text, wording.get(ex.label, ex.label)) for ex in task.examples
        )
        parts = render_prompt_parts(template, task.instruction, labels, examples, self.chat)
        encode = self.engine.encode
        label_ids = []
        for i, label in enumerate(labels):
            ids = label_plan.continuation_ids(encode, parts.suffix, parts.label_lead + label.name)
            if not ids:
                raise InvalidArgument(f"labels[{i}].name", "label tokenizes to no tokens")
            label_ids.append(ids)
        if len(set(label_ids)) != len(label_ids):
            raise InvalidArgument("labels", "two labels tokenize to the same tokens")
        closing = self.closing_id(template, parts)
        if closing is not None:
            label_ids = list(label_plan.close_prefix_labels(label_ids, closing))
        decode = self.engine.decode_token
        reads = {m: tuple(label_plan.plan_reads(label_ids, m)) for m in PLANNED_MODES}
        return PreparedTask(
            parts,
            prefix_ids=tuple(encode(parts.prefix, add_special_tokens=parts.add_special_tokens)),
            suffix_ids=tuple(encode(parts.suffix)),
            label_ids=tuple(label_ids),
            label_token_texts=tuple(tuple(decode(t) for t in ids) for ids in label_ids),
            auto_mode=label_plan.resolve_mode(Mode.AUTO, label_ids),
            reads=reads,
            nodes=label_plan.node_reads(reads[Mode.FULL]),
            paths=label_plan.label_paths(label_ids),
        )

    def closing_id(self, template: Template, parts: PromptParts) -> int | None:
        """The token that ends an answer: end of turn in a chat, else a newline."""
        if template.style == "chat" and self.chat is not None:
            return self.engine.closing_token_id
        newline = label_plan.continuation_ids(self.engine.encode, parts.suffix + " x", "\n")
        return newline[0] if newline else None

    def _prepare_multi_label(self, task: Task) -> PreparedMultiLabel:
        template = self.template_for(task.template)
        parts = render_multi_label_parts(template, task.instruction, self.chat)
        encode = self.engine.encode
        tails = tuple(
            tuple(encode(parts.middle + multi_label_phrase(template, label) + parts.tail))
            for label in task.labels
        )

        def answer_ids(answers: Sequence[str]) -> tuple[TokenIds, ...]:
            return tuple(
                dict.fromkeys(label_plan.continuation_ids(encode, parts.tail, a) for a in answers)
            )

        yes_ids, no_ids = answer_ids(template.yes_answers), answer_ids(template.no_answers)
        if set(yes_ids) & set(no_ids) or not all([*yes_ids, *no_ids]):
            raise InvalidArgument("options.template", "yes and no answers must tokenize apart")
        # Exact answer probabilities even where " Yes" is several tokens (a trie, as FULL).
        reads = tuple(label_plan.plan_reads([*yes_ids, *no_ids], Mode.FULL))
        head = tuple(encode(parts.head, add_special_tokens=parts.add_special_tokens))
        return PreparedMultiLabel(head, tails, yes_ids, no_ids, reads)

    def truncates(self, options: Options) -> bool:
        """Whether a text too long for the context is cut (else rejected)."""
        return self.default_truncate if options.truncate is None else options.truncate

    def fit_text(self, text: str, reserved: int, *, truncate: bool) -> FittedText:
        """The text's tokens in what the context leaves after ``reserved`` tokens: cut to
        fit or rejected; InvalidArgument on ``labels`` when the task alone fills it."""
        text_ids = self.engine.encode(text)
        budget = self.engine.max_model_len - reserved
        if budget <= 0:
            raise InvalidArgument(
                "labels",
                f"instruction, labels and examples take {reserved} tokens; "
                f"the context holds {self.engine.max_model_len}",
            )
        truncated = len(text_ids) > budget
        if truncated and not truncate:
            raise InvalidArgument(
                "text",
                f"text is {len(text_ids)} tokens; at most {budget} fit with this task "
                "(set options.truncation to TRUNCATE to cut it)",
            )
        return FittedText(text_ids[:budget], truncated)

    def prompt_ids(
        self, prepared: PreparedTask, text: str, *, truncate: bool, align: bool = False
    ) -> FittedText:
        """The prompt's token ids; a text too long for the context is cut or rejected.

        With ``align``, newlines after the text end the prompt on a KV-block boundary,
        so that the deeper reads of a label trie recompute only their own tokens.
        """
        fixed = len(prepared.prefix_ids) + len(prepared.suffix_ids)
        # The deepest read is prompt + (longest label - 1) tokens, and it needs one slot to read.
        reserve = self.align_block if align else 0
        text_ids, truncated = self.fit_text(
            text, fixed + prepared.longest_label + reserve, truncate=truncate
        )
        pad = label_plan.block_padding(len(text_ids) + fixed, self.align_block) if align else 0
        ids = [*prepared.prefix_ids, *text_ids, *[self.pad_id] * pad, *prepared.suffix_ids]
        return FittedText(ids, truncated)
