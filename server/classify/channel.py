"""Noisy-channel reads: log P(text | label), the text scored as the answer to a request for
each label (Min et al. 2022).

One prompt-scoring read per label: ``head(label) + text``, where the head asks the model for
a text of that label. The heads are shared by every text of a task, so vLLM's prefix cache
serves them; each read computes the text's own tokens. The channel is prior-free: a label
the model likes to say gets no advantage, which is where direct reads go wrong most.

With a shortlist (COMBINED's ``channel_shortlist``, off by default) only the labels the
direct read ranks best are read; the others get the lowest log-probability read for the
text, so they rank below every label read and among themselves as the direct read ranks
them.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from labelprob.server import scoring
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.classify.prepare import PREPARED_TASKS_CACHED, TaskPreparer
from labelprob.server.classify.types import Options, ReadEngine, Task, Usage
from labelprob.server.prompts import render_channel_head, shown_labels


@dataclass(frozen=True)
class ChannelTask:
    """Each label's head token ids (the request for a text of that label)."""

    heads: tuple[tuple[int, ...], ...]

    @property
    def longest_head(self) -> int:
        return max(len(h) for h in self.heads)


@dataclass(frozen=True)
class ChannelScores:
    """One text's log P(text | label) per label, and the engine work behind them."""

    logprobs: list[float]
    usage: Usage
    truncated: bool
    text_tokens: int  # what each log-prob sums over
    unread: frozenset[int] = frozenset()  # off the shortlist: log-prob imputed, not read


class ChannelReader:
    """Scores texts under every label's channel head."""

    def __init__(self, engine: ReadEngine, preparer: TaskPreparer, budget: ReadBudget) -> None:
        self.engine = engine
        self.preparer = preparer
        self.budget = budget
        self.prepare = functools.lru_cache(PREPARED_TASKS_CACHED)(self._prepare)

    def _prepare(self, task: Task) -> ChannelTask:
        template = self.preparer.template_for(task.template)
        heads = []
        for label in shown_labels(template, task.labels):
            head, add_special = render_channel_head(template, label, self.preparer.chat)
            heads.append(tuple(self.engine.encode(head, add_special_tokens=add_special)))
        return ChannelTask(tuple(heads))

    @staticmethod
    def reads_per_text(task: Task, shortlist: int = 0) -> int:
        """Reads of one text: one a label, or one a shortlisted label."""
        labels = len(task.labels)
        return min(shortlist, labels) if shortlist else labels

    async def read_text(
        self, task: Task, text: str, options: Options, labels: Sequence[int] | None = None
    ) -> ChannelScores:
        """The text's channel log-probability under ``labels`` (indexes; None: every label),
        the others imputed; the caller holds the reads' places in the budget."""
        channel = self.prepare(task)
        fitted = self.preparer.fit_text(
            text, channel.longest_head + 1, truncate=self.preparer.truncates(options)
        )
        # An empty text has no tokens to score: every label gets the same (zero) evidence.
        text_ids = fitted.ids
        read = range(len(channel.heads)) if labels is None else labels
        heads = [channel.heads[i] for i in read]
        rows = await asyncio.gather(*(self._score(h, text_ids, options.cache_salt) for h in heads))
        usage = Usage()
        by_label: dict[int, float] = {}
        for i, head, (logprob, cached) in zip(read, heads, rows, strict=True):
            by_label[i] = logprob
            usage.add(Usage(prompt_tokens=len(head) + len(text_ids), cached_tokens=cached, reads=1))
        logprobs = scoring.impute_unread(by_label, len(channel.heads))
        unread = frozenset(range(len(channel.heads))) - by_label.keys()
        return ChannelScores(logprobs, usage, fitted.truncated, len(text_ids), unread)

    async def _score(
        self, head: tuple[int, ...], text_ids: list[int], cache_salt: str | None
    ) -> tuple[float, int]:
        if not text_ids:
            return 0.0, 0
        rows, cached = await self.engine.score_prompt([*head, *text_ids], len(head), 0, cache_salt)
        return math.fsum(row[tid] for row, tid in zip(rows, text_ids, strict=True)), cached
