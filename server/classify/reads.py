"""Read execution: one text's trie reads on the engine, and PRUNED's branch-and-bound driver.

The root reads go first (they fill the prefix cache), then the deeper ones: all of them at
once for FULL, the trie nodes branch and bound picks for PRUNED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from labelprob.server import labels as label_plan
from labelprob.server import scoring
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.classify.prepare import PreparedTask, TaskPreparer
from labelprob.server.classify.types import Options, ReadEngine, Usage
from labelprob.server.engine import ReadResult
from labelprob.server.labels import Mode, Read, TokenIds
from labelprob.server.scoring import LengthNorm

# A label's comparable score from its index and log-probability (PRUNED's branch and bound).
Rank = Callable[[int, float], float]


@dataclass(frozen=True)
class RawScores:
    """One text's label log-probabilities before normalization."""

    token_logprobs: list[list[float]]
    top: list[tuple[int, float]]
    usage: Usage
    mode: Mode
    truncated: bool
    # PRUNED: sequence log-prob estimates of the labels not read to their end.
    estimates: dict[int, float] = field(default_factory=dict)

    def logprob(self, i: int) -> float:
        """Label ``i``'s sequence log-probability (estimated when not read to its end)."""
        if i in self.estimates:
            return self.estimates[i]
        return scoring.sequence_logprob(self.token_logprobs[i])

    def label_scores(self, label_ids: Sequence[TokenIds], norm: LengthNorm) -> list[float]:
        """Each label's length-normalized score (an estimate's length is its label's)."""
        return [
            scoring.normalized(
                self.logprob(i),
                len(ids) if i in self.estimates else len(self.token_logprobs[i]),
                norm,
            )
            for i, ids in enumerate(label_ids)
        ]


@dataclass
class PromptReads:
    """The reads of one prompt: run on the engine, their log-probs merged by prefix."""

    engine: ReadEngine
    prompt_ids: list[int]
    cache_salt: str | None
    usage: Usage = field(default_factory=Usage)
    merged: dict[TokenIds, dict[int, float]] = field(default_factory=dict)

    async def run(self, read: Read, top_k: int = 0) -> ReadResult:
        ids = [*self.prompt_ids, *read.prefix]
        result = await self.engine.read(
            ids, read.candidates, top_k=top_k, cache_salt=self.cache_salt
        )
        self.usage.add(Usage(result.prompt_tokens, result.cached_tokens, 1))
        if read.candidates:
            self.merged.setdefault(read.prefix, {}).update(result.logprobs)
        return result

    async def run_all(self, reads: Sequence[Read]) -> None:
        await asyncio.gather(*(self.run(r) for r in reads))

    async def run_path(self, path: TokenIds) -> None:
        """One request over the prompt and a whole label path: the prompt log-probs of the
        path's tokens after its first (whose row is the prompt's last, read by the root)."""
        ids = [*self.prompt_ids, *path]
        rows, cached = await self.engine.score_prompt(
            ids, len(self.prompt_ids) + 1, 0, cache_salt=self.cache_salt
        )
        self.usage.add(Usage(len(ids), cached, 1))
        for prefix, logprobs in label_plan.path_logprobs(path, rows).items():
            self.merged.setdefault(prefix, {}).update(logprobs)


async def read_pruned_nodes(reads: PromptReads, prepared: PreparedTask, rank: Rank) -> None:
    """PRUNED after the root: best-first down the trie, one node a wave, until a node that
    ends a label is read (that label often settles the top one alone); then, a wave at a
    time, every node under which a label could still outscore (or tie) the best exact label."""
    unread = dict(prepared.nodes)
    diving = True
    while todo := label_plan.nodes_to_read(prepared.label_ids, reads.merged, unread, rank):
        if diving:
            todo = todo[:1]
            diving = todo[0] not in prepared.label_ends
        await reads.run_all([read for node in todo for read in unread.pop(node)])


def reads_by_paths(prepared: PreparedTask, mode: Mode, full_reads: str) -> bool:
    """Whether FULL reads this task's deeper tokens by label paths (``--full-reads paths``)."""
    return (
        full_reads == "paths" and prepared.concrete_mode(mode) is Mode.FULL and bool(prepared.paths)
    )


class ReadExecutor:
    """Turns a prepared task and a text into the labels' raw log-probabilities."""

    def __init__(
        self,
        engine: ReadEngine,
        preparer: TaskPreparer,
        budget: ReadBudget,
        full_reads: str = "trie",
    ) -> None:
        self.engine = engine
        self.preparer = preparer
        self.budget = budget
        self.full_reads = full_reads

    def reads_per_text(self, prepared: PreparedTask, options: Options) -> int:
        """The engine requests one text may take: its mode's plan (roots and label paths when
        FULL reads by paths), plus the top-k read if asked."""
        if reads_by_paths(prepared, options.mode, self.full_reads):
            planned = len(prepared.roots) + len(prepared.paths)
        else:
            planned = len(prepared.plan(options.mode))
        return planned + (1 if options.top_alternatives > 1 else 0)

    async def read_text(
        self,
        prepared: PreparedTask,
        text: str,
        options: Options,
        offsets: Sequence[float] | None = None,
    ) -> RawScores:
        """One text's raw label log-probs; the caller holds the text's places in the budget.

        ``offsets``: what calibration will subtract from each label's score, so that PRUNED's
        bounds rank labels as the final scores will (zeros when None)."""
        return await self._read(prepared, text, options, offsets, places=0)

    async def read_text_admitted(
        self, prepared: PreparedTask, text: str, options: Options
    ) -> RawScores:
        """As ``read_text``, admitting its own reads against the budget."""
        return await self._read(
            prepared, text, options, None, places=self.reads_per_text(prepared, options)
        )

    async def _read(
        self,
        prepared: PreparedTask,
        text: str,
        options: Options,
        offsets: Sequence[float] | None,
        places: int,
    ) -> RawScores:
        mode = prepared.concrete_mode(options.mode)
        deeper_reads = any(r.prefix for r in prepared.plan(mode))
        truncate = self.preparer.truncates(options)
        prompt = self.preparer.prompt_ids(prepared, text, truncate=truncate, align=deeper_reads)
        lengths = [len(ids) for ids in prepared.label_ids]
        shift = offsets or [0.0] * len(lengths)

        def rank(i: int, logprob: float) -> float:
            return scoring.normalized(logprob, lengths[i], options.length_norm) - shift[i]

        reads = PromptReads(self.engine, prompt.ids, options.cache_salt)
        by_paths = reads_by_paths(prepared, mode, self.full_reads)
        with self.budget.hold(places):
            top = await self._read_trie(
                reads, prepared, mode, options.top_alternatives, rank, by_paths
            )
        if mode is Mode.PRUNED:
            token_logprobs, estimates = label_plan.estimated_logprobs(
                prepared.label_ids, reads.merged
            )
            return RawScores(token_logprobs, top, reads.usage, mode, prompt.truncated, estimates)
        token_logprobs = label_plan.label_token_logprobs(prepared.label_ids, mode, reads.merged)
        return RawScores(token_logprobs, top, reads.usage, mode, prompt.truncated)

    @staticmethod
    async def _read_trie(
        reads: PromptReads,
        prepared: PreparedTask,
        mode: Mode,
        top_k: int,
        rank: Rank,
        by_paths: bool,
    ) -> list[tuple[int, float]]:
        """Runs the mode's reads; returns the most likely tokens at the answer position."""
        first = await asyncio.gather(*(reads.run(r) for r in prepared.roots))
        deeper: Awaitable[object]
        if mode is Mode.PRUNED:
            deeper = read_pruned_nodes(reads, prepared, rank)
        elif by_paths:
            deeper = asyncio.gather(*(reads.run_path(path) for path in prepared.paths))
        else:
            deeper = reads.run_all([r for r in prepared.plan(mode) if r.prefix])
        # The root read's sampled token is the top-1 alternative for free; k > 1 needs its own.
        if top_k > 1:
            _, top_read = await asyncio.gather(deeper, reads.run(Read((), ()), top_k))
            return top_read.top
        await deeper
        return first[0].top
