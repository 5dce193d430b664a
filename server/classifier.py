"""The classification path between the service and the engine: prompt, label plan, reads, scores.

Domain objects in, domain objects out: the gRPC service converts them to and
from the proto. The engine is anything with the ``Engine`` methods used here,
so the path is testable with the real engine and, for pure logic, a fake one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from labelprob.server import labels as label_plan
from labelprob.server import scoring
from labelprob.server.engine import ReadResult
from labelprob.server.errors import InvalidArgument, Overloaded
from labelprob.server.labels import Mode, Read, TokenIds
from labelprob.server.prompts import (
    ChatRenderer,
    ExampleSpec,
    LabelSpec,
    PromptParts,
    Template,
    multi_label_phrase,
    render_multi_label_parts,
    render_prompt_parts,
)
from labelprob.server.scoring import Calibration, Decision, LengthNorm, Thresholds

DEFAULT_CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
# A label's comparable score from its index and log-probability (PRUNED's branch and bound).
Rank = Callable[[int, float], float]
PLANNED_MODES = (Mode.FIRST_TOKEN, Mode.FULL)
# Calibration vectors kept (per task, input, mode, tenant); the oldest go first.
MAX_CALIBRATION_ENTRIES = 4096


class ReadEngine(Protocol):
    max_model_len: int

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...
    def decode_token(self, token_id: int) -> str: ...
    def chat_renderer(self) -> ChatRenderer | None: ...
    async def read(
        self,
        prompt_ids: Sequence[int],
        candidates: Sequence[int] = (),
        *,
        top_k: int = 0,
        cache_salt: str | None = None,
    ) -> ReadResult: ...
    async def score_prompt(
        self, token_ids: Sequence[int], start: int, top_k: int, cache_salt: str | None = None
    ) -> tuple[list[dict[int, float]], int]: ...


@dataclass(frozen=True)
class Task:
    """What is shared by every text of a request: labels, instruction, examples, template."""

    labels: tuple[LabelSpec, ...]
    instruction: str = ""
    examples: tuple[ExampleSpec, ...] = ()
    template: str = ""


@dataclass(frozen=True)
class Options:
    mode: Mode = Mode.AUTO
    length_norm: LengthNorm = LengthNorm.SUM
    calibration: Calibration | None = None  # None: the server default
    top_alternatives: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)
    truncate: bool | None = None  # None: the server default
    content_free_inputs: tuple[str, ...] = ()
    domain_premise: str = ""
    cache_salt: str | None = None
    multi_label: bool = False
    multi_label_threshold: float = 0.5

    def with_salt(self, salt: str | None) -> Options:
        return replace(self, cache_salt=salt)


@dataclass(frozen=True)
class TokenScore:
    token_id: int
    token: str
    logprob: float


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    reads: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.reads += other.reads


@dataclass(frozen=True)
class LabelResult:
    name: str
    probability: float
    logprob: float
    tokens: tuple[TokenScore, ...]
    uncalibrated_probability: float
    score: float
    estimated: bool = False  # PRUNED: logprob estimated from the first token, branch unread


@dataclass(frozen=True)
class Classification:
    top_label: str
    labels: tuple[LabelResult, ...]
    label_mass: float
    entropy: float
    margin: float
    top_alternatives: tuple[TokenScore, ...]
    decision: Decision
    usage: Usage
    mode: Mode
    calibration: Calibration
    truncated: bool
    selected_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoredCompletion:
    tokens: tuple[TokenScore, ...]
    alternatives: tuple[tuple[TokenScore, ...], ...]
    sum_logprob: float
    mean_logprob: float
    usage: Usage


@dataclass(frozen=True)
class PreparedMultiLabel:
    """A multi-label task: shared head, per-label question tokens, yes/no answer tokens."""

    head_ids: tuple[int, ...]
    label_tails: tuple[tuple[int, ...], ...]
    yes_ids: tuple[TokenIds, ...]  # token sequences of the "yes" surface forms
    no_ids: tuple[TokenIds, ...]
    # Reads of the yes/no answer trie after each label's prompt: one for most tokenizers.
    reads: tuple[Read, ...]


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
    branches: dict[int, tuple[Read, ...]]  # FULL's deeper reads by first token (PRUNED)

    @property
    def longest_label(self) -> int:
        return max(len(ids) for ids in self.label_ids)

    def plan(self, mode: Mode) -> tuple[Mode, tuple[Read, ...]]:
        """The concrete mode (AUTO resolved) and its reads; for PRUNED, the most it may
        read (FULL's reads), which is what it is admitted for."""
        concrete = self.auto_mode if mode is Mode.AUTO else mode
        return concrete, self.reads[Mode.FULL if concrete is Mode.PRUNED else concrete]

    @functools.cached_property
    def roots(self) -> tuple[Read, ...]:
        """The reads of the empty prefix, every mode's first (derived once per task)."""
        return tuple(r for r in self.reads[Mode.FULL] if not r.prefix)


@dataclass(frozen=True)
class RawScores:
    """One text's label log-probabilities before normalization."""

    token_logprobs: list[list[float]]
    top: list[tuple[int, float]]
    usage: Usage
    mode: Mode
    truncated: bool
    # PRUNED: sequence log-prob estimates of the labels whose branch was not read.
    estimates: dict[int, float] = field(default_factory=dict)

    def logprob(self, i: int) -> float:
        """Label ``i``'s sequence log-probability (estimated when its branch was not read)."""
        if i in self.estimates:
            return self.estimates[i]
        return scoring.sequence_logprob(self.token_logprobs[i])


def exact_mode(mode: Mode) -> Mode:
    """The mode calibration vectors are read in: PRUNED's are FULL's (read once per task)."""
    return Mode.FULL if mode is Mode.PRUNED else mode


class Classifier:
    """Runs classification requests against a read engine."""

    def __init__(
        self,
        engine: ReadEngine,
        templates: dict[str, Template],
        *,
        default_template: str = "chat",
        default_calibration: Calibration = Calibration.NONE,
        default_truncate: bool = True,
        max_inflight_reads: int = 4096,
        align_block: int = 0,
    ) -> None:
        self.engine = engine
        self.templates = templates
        self.default_template = default_template
        self.default_calibration = default_calibration
        self.default_truncate = default_truncate
        self.max_inflight_reads = max_inflight_reads
        self.inflight_reads = 0
        # Block size to align multi-read prompts to (0: off), and the token that pads them.
        self.align_block = align_block
        self.pad_id = engine.encode("\n")[-1] if align_block else 0
        self._chat = engine.chat_renderer()
        self.prepare = functools.lru_cache(maxsize=512)(self._prepare)
        self.prepare_multi_label = functools.lru_cache(maxsize=512)(self._prepare_multi_label)
        self._calibration_cache: dict[tuple, asyncio.Future[list[float]]] = {}

    # -- preparation (cached per task) -------------------------------------------

    def template_for(self, name: str) -> Template:
        template = self.templates.get(name or self.default_template)
        if template is None:
            raise InvalidArgument(
                "options.template", f"unknown template {name!r}; known: {sorted(self.templates)}"
            )
        return template

    def _prepare(self, task: Task) -> PreparedTask:
        template = self.template_for(task.template)
        parts = render_prompt_parts(
            template, task.instruction, task.labels, task.examples, self._chat
        )
        encode = self.engine.encode
        prefix_ids = tuple(encode(parts.prefix, parts.add_special_tokens))
        suffix_ids = tuple(encode(parts.suffix))
        label_ids = []
        for i, label in enumerate(task.labels):
            ids = label_plan.continuation_ids(encode, parts.suffix, parts.label_lead + label.name)
            if not ids:
                raise InvalidArgument(f"labels[{i}].name", "label tokenizes to no tokens")
            label_ids.append(ids)
        if len(set(label_ids)) != len(label_ids):
            raise InvalidArgument("labels", "two labels tokenize to the same tokens")
        decode = self.engine.decode_token
        reads = {m: tuple(label_plan.plan_reads(label_ids, m)) for m in PLANNED_MODES}
        return PreparedTask(
            parts,
            prefix_ids,
            suffix_ids,
            tuple(label_ids),
            label_token_texts=tuple(tuple(decode(t) for t in ids) for ids in label_ids),
            auto_mode=label_plan.resolve_mode(Mode.AUTO, label_ids),
            reads=reads,
            branches=label_plan.branch_reads(reads[Mode.FULL]),
        )

    def _prepare_multi_label(self, task: Task) -> PreparedMultiLabel:
        template = self.template_for(task.template)
        parts = render_multi_label_parts(template, task.instruction, self._chat)
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
        head = tuple(encode(parts.head, parts.add_special_tokens))
        return PreparedMultiLabel(head, tails, yes_ids, no_ids, reads)

    def truncates(self, options: Options) -> bool:
        return self.default_truncate if options.truncate is None else options.truncate

    def fit_text(self, text: str, reserved: int, truncate: bool) -> tuple[list[int], bool]:
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
        return text_ids[:budget], truncated

    def prompt_ids(
        self, prepared: PreparedTask, text: str, truncate: bool, align: bool = False
    ) -> tuple[list[int], bool]:
        """The prompt's token ids; a text too long for the context is cut or rejected.

        With ``align``, newlines after the text end the prompt on a KV-block boundary,
        so that the deeper reads of a label trie recompute only their own tokens.
        """
        fixed = len(prepared.prefix_ids) + len(prepared.suffix_ids)
        # The deepest read is prompt + (longest label - 1) tokens, and it needs one slot to read.
        reserve = self.align_block if align else 0
        text_ids, truncated = self.fit_text(
            text, fixed + prepared.longest_label + reserve, truncate
        )
        pad = label_plan.block_padding(len(text_ids) + fixed, self.align_block) if align else 0
        return [
            *prepared.prefix_ids,
            *text_ids,
            *[self.pad_id] * pad,
            *prepared.suffix_ids,
        ], truncated

    # -- reads -------------------------------------------------------------------

    def _admit(self, n_reads: int) -> None:
        """Admits a request's reads, or raises Overloaded when the queue bound would be passed.

        A request larger than the whole bound still runs when nothing else is in flight.
        """
        if (
            n_reads
            and self.inflight_reads + n_reads > self.max_inflight_reads > 0 < self.inflight_reads
        ):
            raise Overloaded(
                f"{self.inflight_reads} engine reads in flight; limit {self.max_inflight_reads}"
            )
        self.inflight_reads += n_reads

    @contextlib.contextmanager
    def admitted(self, n_reads: int) -> Iterator[None]:
        """Holds ``n_reads`` places in the bounded queue of engine reads while inside."""
        self._admit(n_reads)
        try:
            yield
        finally:
            self.inflight_reads -= n_reads

    async def _run_reads(
        self,
        prompt_ids: list[int],
        prepared: PreparedTask,
        mode: Mode,
        top_k: int,
        salt: str | None,
        rank: Rank,
    ) -> tuple[dict[TokenIds, dict[int, float]], list[tuple[int, float]], Usage]:
        """Root reads first (they fill the prefix cache), then the deeper ones: all of them
        at once for FULL, the branches branch and bound picks for PRUNED."""
        usage = Usage()
        merged: dict[TokenIds, dict[int, float]] = {}

        async def run(read: Read, k: int = 0) -> ReadResult:
            result = await self.engine.read(
                [*prompt_ids, *read.prefix], read.candidates, top_k=k, cache_salt=salt
            )
            usage.add(Usage(result.prompt_tokens, result.cached_tokens, 1))
            if read.candidates:
                merged.setdefault(read.prefix, {}).update(result.logprobs)
            return result

        async def run_all(reads: Sequence[Read]) -> None:
            await asyncio.gather(*(run(r) for r in reads))

        _, reads = prepared.plan(mode)
        first = await asyncio.gather(*(run(r) for r in prepared.roots))
        if mode is Mode.PRUNED:
            deeper = self._read_branches(prepared, merged, rank, run_all)
        else:
            deeper = run_all([r for r in reads if r.prefix])
        # The root read's sampled token is the top-1 alternative for free; k > 1 needs its own.
        if top_k > 1:
            _, top_read = await asyncio.gather(deeper, run(Read((), ()), top_k))
            return merged, top_read.top, usage
        await deeper
        return merged, first[0].top, usage

    @staticmethod
    async def _read_branches(
        prepared: PreparedTask,
        merged: dict[TokenIds, dict[int, float]],
        rank: Rank,
        run_all: Callable[[Sequence[Read]], Awaitable[None]],
    ) -> None:
        """PRUNED after the root: the branch with the best bound first (it often settles the
        top label alone), then every branch that could still outscore the best exact label.
        Each wave reads whole branches; at most two are needed."""
        unread = dict(prepared.branches)
        first_wave = True
        while todo := label_plan.branches_to_read(prepared.label_ids, merged, unread, rank):
            if first_wave:
                todo, first_wave = todo[:1], False
            await run_all([read for token in todo for read in unread.pop(token)])

    @staticmethod
    def reads_per_text(reads: list[Read], top_k: int) -> int:
        return len(reads) + (1 if top_k > 1 else 0)

    async def raw_scores(
        self,
        prepared: PreparedTask,
        text: str,
        options: Options,
        admit: bool = True,
        offsets: Sequence[float] | None = None,
    ) -> RawScores:
        """One text's raw label log-probs. ``admit=False``: the caller holds the queue places.
        ``offsets``: what calibration will subtract from each label's score, so that
        PRUNED's bounds rank labels as the final scores will (zeros when None)."""
        mode, reads = prepared.plan(options.mode)
        deeper_reads = any(r.prefix for r in reads)
        prompt_ids, truncated = self.prompt_ids(
            prepared, text, self.truncates(options), align=deeper_reads
        )
        places = self.reads_per_text(reads, options.top_alternatives) if admit else 0
        lengths = [len(ids) for ids in prepared.label_ids]
        shift = offsets or [0.0] * len(lengths)

        def rank(i: int, logprob: float) -> float:
            return scoring.normalized(logprob, lengths[i], options.length_norm) - shift[i]

        with self.admitted(places):
            merged, top, usage = await self._run_reads(
                prompt_ids,
                prepared,
                mode,
                options.top_alternatives,
                options.cache_salt,
                rank,
            )
        if mode is Mode.PRUNED:
            token_logprobs, estimates = label_plan.estimated_logprobs(prepared.label_ids, merged)
            return RawScores(token_logprobs, top, usage, mode, truncated, estimates)
        token_logprobs = label_plan.label_token_logprobs(prepared.label_ids, mode, merged)
        return RawScores(token_logprobs, top, usage, mode, truncated)

    @staticmethod
    def label_scores(prepared: PreparedTask, raw: RawScores, norm: LengthNorm) -> list[float]:
        """Each label's length-normalized score (an estimate's length is its label's)."""
        return [
            scoring.normalized(
                raw.logprob(i),
                len(ids) if i in raw.estimates else len(raw.token_logprobs[i]),
                norm,
            )
            for i, ids in enumerate(prepared.label_ids)
        ]

    # -- calibration -------------------------------------------------------------

    async def _cached_scores(self, key: tuple, compute) -> list[float]:
        """Computes a calibration vector once per key; concurrent callers share the work."""
        future = self._calibration_cache.get(key)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(compute())
            self._calibration_cache[key] = future
            if len(self._calibration_cache) > MAX_CALIBRATION_ENTRIES:
                del self._calibration_cache[next(iter(self._calibration_cache))]
        return list(await asyncio.shield(future))

    async def _text_scores(
        self, prepared: PreparedTask, text: str, options: Options, mode: Mode
    ) -> list[float]:
        raw = await self.raw_scores(prepared, text, replace(options, mode=mode, top_alternatives=0))
        return self.label_scores(prepared, raw, options.length_norm)

    async def content_free_scores(
        self, task: Task, prepared: PreparedTask, options: Options, mode: Mode
    ) -> list[list[float]]:
        inputs = options.content_free_inputs or DEFAULT_CONTENT_FREE_INPUTS
        rows = []
        for text in inputs:
            key = ("cf", task, text, mode, options.length_norm, options.cache_salt)
            rows.append(
                await self._cached_scores(
                    key, lambda t=text: self._text_scores(prepared, t, options, mode)
                )
            )
        return rows

    async def premise_scores(
        self, task: Task, prepared: PreparedTask, options: Options, mode: Mode
    ) -> list[float]:
        """Label scores under the domain premise alone: the task without labels list or text."""
        premise_task = Task(
            labels=task.labels,
            instruction=options.domain_premise or task.instruction,
            template=task.template,
        )
        premise = self.prepare(premise_task)
        key = ("pmi", premise_task, mode, options.length_norm, options.cache_salt)
        return await self._cached_scores(key, lambda: self._text_scores(premise, "", options, mode))

    # -- multi-label -------------------------------------------------------------

    async def _yes_no_logits(
        self, prepared: PreparedMultiLabel, text: str, options: Options
    ) -> tuple[list[float], list[tuple[float, float]], Usage, bool]:
        """One yes/no read per label; the first fills the prefix cache with the text."""
        reserved = len(prepared.head_ids) + max(len(t) for t in prepared.label_tails) + 1
        text_ids, truncated = self.fit_text(text, reserved, self.truncates(options))
        shared = [*prepared.head_ids, *text_ids]
        answers = [*prepared.yes_ids, *prepared.no_ids]
        usage = Usage()

        async def answer_logprobs(tail: tuple[int, ...]) -> list[float]:
            """Sequence log-probs of every yes/no surface form after one label's question."""
            prompt = [*shared, *tail]

            async def run(read: Read) -> tuple[Read, dict[int, float]]:
                result = await self.engine.read(
                    [*prompt, *read.prefix], read.candidates, cache_salt=options.cache_salt
                )
                usage.add(Usage(result.prompt_tokens, result.cached_tokens, 1))
                return read, result.logprobs

            done = await asyncio.gather(*(run(r) for r in prepared.reads))
            merged = label_plan.merge_reads(done)
            per_token = label_plan.label_token_logprobs(answers, Mode.FULL, merged)
            return [scoring.sequence_logprob(t) for t in per_token]

        with self.admitted(len(prepared.label_tails) * len(prepared.reads)):
            # The first label's reads put the text in the prefix cache for all the others.
            first = await answer_logprobs(prepared.label_tails[0])
            rest = await asyncio.gather(*(answer_logprobs(t) for t in prepared.label_tails[1:]))
        n_yes = len(prepared.yes_ids)
        logits, masses = [], []
        for row in [first, *rest]:
            yes, no = row[:n_yes], row[n_yes:]
            logits.append(scoring.yes_no_logit(yes, no))
            masses.append((scoring.logsumexp(yes), scoring.logsumexp(no)))
        return logits, masses, usage, truncated

    async def classify_multi_label(
        self, task: Task, texts: Sequence[str], options: Options
    ) -> list[Classification]:
        """An independent probability per label: P(yes) / (P(yes) + P(no)) for each."""
        prepared = self.prepare_multi_label(task)
        calibration = scoring.resolve_calibration(
            options.calibration or self.default_calibration, batch_size=1
        )
        if calibration not in (Calibration.NONE, Calibration.CONTEXTUAL):
            raise InvalidArgument(
                "options.calibration", "multi-label supports NONE and CONTEXTUAL calibration"
            )
        runs = await asyncio.gather(*(self._yes_no_logits(prepared, t, options) for t in texts))
        cf_rows: list[list[float]] = []
        if calibration is Calibration.CONTEXTUAL:
            for text in options.content_free_inputs or DEFAULT_CONTENT_FREE_INPUTS:
                key = ("cf-multi", task, text, options.cache_salt)

                async def compute(t: str = text) -> list[float]:
                    return (await self._yes_no_logits(prepared, t or " ", options))[0]

                cf_rows.append(await self._cached_scores(key, compute))
        return [
            self._multi_label_result(task, prepared, run, cf_rows, calibration, options)
            for run in runs
        ]

    def _multi_label_result(
        self,
        task: Task,
        prepared: PreparedMultiLabel,
        run: tuple[list[float], list[tuple[float, float]], Usage, bool],
        cf_rows: list[list[float]],
        calibration: Calibration,
        options: Options,
    ) -> Classification:
        logits, masses, usage, truncated = run
        calibrated = (
            scoring.contextual_calibrated_logits(logits, cf_rows) if cf_rows else list(logits)
        )
        probabilities = [scoring.sigmoid(x) for x in calibrated]
        yes_first = prepared.yes_ids[0][0]
        yes_token = self.engine.decode_token(yes_first)
        labels = tuple(
            LabelResult(
                name=label.name,
                probability=probabilities[i],
                logprob=masses[i][0],
                tokens=(TokenScore(yes_first, yes_token, masses[i][0]),),
                uncalibrated_probability=scoring.sigmoid(logits[i]),
                score=calibrated[i],
            )
            for i, label in enumerate(task.labels)
        )
        top = max(range(len(labels)), key=probabilities.__getitem__)
        mass = math.fsum(math.exp(y) + math.exp(n) for y, n in masses) / len(masses)
        sig = scoring.Signals(
            top_index=top,
            entropy=math.fsum(scoring.binary_entropy(p) for p in probabilities) / len(labels),
            margin=scoring.margin(probabilities),
            label_mass=min(1.0, mass),
        )
        return Classification(
            top_label=labels[top].name,
            labels=labels,
            label_mass=sig.label_mass,
            entropy=sig.entropy,
            margin=sig.margin,
            top_alternatives=(),
            decision=scoring.decide(sig, probabilities[top], options.thresholds),
            usage=usage,
            mode=Mode.FIRST_TOKEN,
            calibration=calibration,
            truncated=truncated,
            selected_labels=tuple(
                lb.name for lb in labels if lb.probability >= options.multi_label_threshold
            ),
        )

    # -- completion scoring (evals) ----------------------------------------------

    async def score_completion(
        self,
        prompt: str,
        messages: Sequence[dict[str, str]],
        completion: str,
        top_k: int,
        cache_salt: str | None = None,
    ) -> ScoredCompletion:
        """Per-token log-probabilities of ``completion`` after a prompt, in one forward pass."""
        if messages:
            if self._chat is None:
                raise InvalidArgument("messages", "the model has no chat template; send prompt")
            prompt = self._chat(list(messages))
        encode = self.engine.encode
        prompt_ids = encode(prompt, not messages)
        completion_ids = label_plan.continuation_ids(encode, prompt, completion)
        if not completion_ids:
            raise InvalidArgument("completion", "completion tokenizes to no tokens")
        total = len(prompt_ids) + len(completion_ids)
        if total > self.engine.max_model_len:
            raise InvalidArgument(
                "completion",
                f"prompt + completion are {total} tokens; context holds "
                f"{self.engine.max_model_len}",
            )
        with self.admitted(1):
            rows, cached = await self.engine.score_prompt(
                [*prompt_ids, *completion_ids], len(prompt_ids), top_k, cache_salt
            )
        decode = self.engine.decode_token
        tokens, alternatives = [], []
        for token_id, row in zip(completion_ids, rows, strict=True):
            tokens.append(TokenScore(token_id, decode(token_id), row[token_id]))
            ranked = sorted(row.items(), key=lambda item: item[1], reverse=True)[:top_k]
            alternatives.append(tuple(TokenScore(t, decode(t), lp) for t, lp in ranked))
        logprobs = [t.logprob for t in tokens]
        return ScoredCompletion(
            tokens=tuple(tokens),
            alternatives=tuple(alternatives),
            sum_logprob=scoring.sequence_logprob(logprobs),
            mean_logprob=scoring.sequence_logprob(logprobs) / len(logprobs),
            usage=Usage(total, cached, 1),
        )

    # -- requests ----------------------------------------------------------------

    async def classify(
        self, task: Task, texts: Sequence[str], options: Options
    ) -> list[Classification]:
        """Classifies texts against one task; results keep the order of ``texts``."""
        if options.multi_label:
            return await self.classify_multi_label(task, texts, options)
        prepared = self.prepare(task)
        mode, reads = prepared.plan(options.mode)
        calibration = scoring.resolve_calibration(
            options.calibration or self.default_calibration,
            len(texts),
            known_offsets=mode is Mode.PRUNED,
        )
        # A batch is admitted whole or not at all: no half-done batch holds engine time.
        offsets = None
        if mode is Mode.PRUNED:  # before admission: the vectors' own reads admit themselves
            offsets = await self._calibration_offsets(task, prepared, options, calibration)
        with self.admitted(len(texts) * self.reads_per_text(reads, options.top_alternatives)):
            raws = await asyncio.gather(
                *(self.raw_scores(prepared, t, options, False, offsets) for t in texts)
            )
        scores = [self.label_scores(prepared, raw, options.length_norm) for raw in raws]
        calibrated = await self._calibrate(task, prepared, options, calibration, raws, scores)
        return [
            self._result(task, prepared, raw, s, c, calibration, options)
            for raw, s, c in zip(raws, scores, calibrated, strict=True)
        ]

    async def _calibrate(
        self,
        task: Task,
        prepared: PreparedTask,
        options: Options,
        calibration: Calibration,
        raws: Sequence[RawScores],
        scores: list[list[float]],
    ) -> list[list[float]]:
        if calibration is Calibration.NONE:
            return scores
        if calibration is Calibration.BATCH:
            return scoring.batch_calibrated(scores)
        out = []
        for raw, row in zip(raws, scores, strict=True):
            mode = exact_mode(raw.mode)
            if calibration is Calibration.CONTEXTUAL:
                cf = await self.content_free_scores(task, prepared, options, mode)
                out.append(scoring.contextual_calibrated(row, cf))
            else:
                premise = await self.premise_scores(task, prepared, options, mode)
                out.append(scoring.pmi_calibrated(row, premise))
        return out

    async def _calibration_offsets(
        self, task: Task, prepared: PreparedTask, options: Options, calibration: Calibration
    ) -> list[float] | None:
        """What calibration subtracts from each label's score, up to a constant: known
        before any text is read for contextual and domain-PMI calibration (per task, cached),
        not for batch calibration, which depends on the whole batch's scores."""
        if calibration is Calibration.CONTEXTUAL:
            cf = await self.content_free_scores(task, prepared, options, Mode.FULL)
            return scoring.contextual_log_prior(cf)
        if calibration is Calibration.DOMAIN_PMI:
            return await self.premise_scores(task, prepared, options, Mode.FULL)
        return None

    def _result(
        self,
        task: Task,
        prepared: PreparedTask,
        raw: RawScores,
        scores: list[float],
        calibrated: list[float],
        calibration: Calibration,
        options: Options,
    ) -> Classification:
        raw_logprobs = [raw.logprob(i) for i in range(len(raw.token_logprobs))]
        uncalibrated = scoring.softmax(scores)
        probabilities = scoring.softmax(calibrated)
        sig = scoring.signals(probabilities, raw_logprobs)
        decode = self.engine.decode_token
        labels = tuple(
            LabelResult(
                name=label.name,
                probability=probabilities[i],
                logprob=raw_logprobs[i],
                tokens=tuple(
                    TokenScore(tid, text, lp)
                    for tid, text, lp in zip(
                        prepared.label_ids[i],
                        prepared.label_token_texts[i],
                        raw.token_logprobs[i],
                        strict=False,
                    )
                ),
                uncalibrated_probability=uncalibrated[i],
                score=calibrated[i],
                estimated=i in raw.estimates,
            )
            for i, label in enumerate(task.labels)
        )
        top_probability = probabilities[sig.top_index]
        return Classification(
            top_label=task.labels[sig.top_index].name,
            labels=labels,
            label_mass=sig.label_mass,
            entropy=sig.entropy,
            margin=sig.margin,
            top_alternatives=tuple(
                TokenScore(tid, decode(tid), lp)
                for tid, lp in raw.top[: max(options.top_alternatives, 0)]
                if math.isfinite(lp)
            ),
            decision=scoring.decide(sig, top_probability, options.thresholds),
            usage=raw.usage,
            mode=raw.mode,
            calibration=calibration,
            truncated=raw.truncated,
        )
