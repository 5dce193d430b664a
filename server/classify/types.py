"""Domain objects of the classification path: what a request asks, what it gets back, and
the engine it reads from. Plain dataclasses; the wire layer converts them to and from the proto."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from labelprob.server.engine import ReadResult
from labelprob.server.labels import Mode
from labelprob.server.prompts import ChatRenderer, ExampleSpec, LabelSpec
from labelprob.server.scoring import Calibration, Decision, LengthNorm, Method, Thresholds


class ReadEngine(Protocol):
    """What the classification path needs from an engine (the real one, or a fake in tests)."""

    max_model_len: int
    closing_token_id: int | None  # ends an assistant turn

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
    method: Method | None = None  # None: the server default
    prior_scope: str = ""  # online calibration: requests of one scope share a task prior
    channel_shortlist: int = 0  # COMBINED: labels whose channel is read; 0: the server default
    label_orders: int = 0  # the direct read's label orders, 1 or 2; 0: resolved per request
    label_prior: tuple[float, ...] = ()  # each label's expected share; (): equally likely
    temperature: float = 1.0  # divides the final log-scores; fitted on the caller's rows

    def with_salt(self, salt: str | None) -> Options:
        return replace(self, cache_salt=salt)


@dataclass(frozen=True)
class CompletionRequest:
    """ScoreCompletion's input: a prompt (or chat messages) and the completion to score."""

    completion: str
    prompt: str = ""
    messages: tuple[dict[str, str], ...] = ()
    top_alternatives: int = 0
    cache_salt: str | None = None


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
    estimated: bool = False  # PRUNED: logprob estimated, label not read to its end
    channel_logprob: float = 0.0  # log P(text | label) (CHANNEL and COMBINED)
    channel_estimated: bool = False  # off the channel shortlist: channel_logprob imputed


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
    method: Method = Method.DIRECT


@dataclass(frozen=True)
class ScoredCompletion:
    tokens: tuple[TokenScore, ...]
    alternatives: tuple[tuple[TokenScore, ...], ...]
    sum_logprob: float
    mean_logprob: float
    usage: Usage
