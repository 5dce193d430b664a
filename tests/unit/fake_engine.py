"""A fake read engine with scripted log-probabilities: the classification path without vLLM.

It implements the same ``ReadEngine`` protocol the path uses. Its tokenizer is a small
regex word-piece tokenizer (a word with its leading space, a punctuation mark, a single
whitespace character), so " alarm_set" is three tokens: " alarm", "_", "set". The
log-probability of a token after a prompt comes from a script: a function of the prompt's
text and the token's text, so tests state expected values in words, not token ids.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from labelprob.server.engine import ReadResult

TOKEN = re.compile(r" ?[A-Za-z0-9]+| ?[^A-Za-z0-9\s]|\s")
BOS = "<s>"
BLOCK = 4  # prefix-cache block of the fake's cache, in tokens
UNLIKELY = -12.0

# log P(token | prompt text)
Script = Callable[[str, str], float]


def answer_table(
    table: Mapping[str, Mapping[str, float]], cue: str = "Label:", default: float = UNLIKELY
) -> Script:
    """A script keyed by what follows the last ``cue`` in the prompt: the label so far.

    ``table[""]`` holds the first tokens' log-probs, ``table[" alarm"]`` the tokens after
    " alarm", and so on; any other token gets ``default``.
    """

    def script(context: str, token: str) -> float:
        _, found, answer = context.rpartition(cue)
        if not found:
            return default
        return table.get(answer, {}).get(token, default)

    script.tokens = tuple({t for row in table.values() for t in row})  # type: ignore[attr-defined]
    return script


@dataclass(frozen=True)
class ReadCall:
    prompt: str
    prompt_len: int
    candidates: tuple[str, ...]
    top_k: int
    cache_salt: str | None


@dataclass
class FakeEngine:
    script: Script = field(default=lambda context, token: UNLIKELY)
    max_model_len: int = 512
    chat: bool = False
    vocab_size: int = 1000
    # Like SentencePiece's dummy prefix: the first piece of every encoded string is marked
    # ("▁yes"), so a word tokenizes differently alone than after other text.
    dummy_prefix: bool = False
    calls: list[ReadCall] = field(default_factory=list)
    # While set and not open, reads wait: work held in flight (admission, stream window).
    gate: asyncio.Event | None = None
    # Reads whose prompt contains a key wait for its event.
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    # Raised by every read (a dead engine, a bug).
    failure: Exception | None = None
    _ids: dict[str, int] = field(default_factory=lambda: {BOS: 0})
    _cached: set[tuple[str | None, tuple[int, ...]]] = field(default_factory=set)

    def __post_init__(self) -> None:
        # The script's tokens are in the vocabulary (top-k alternatives) before any text is.
        for token in sorted(getattr(self.script, "tokens", ())):
            self._ids.setdefault(token, len(self._ids))

    # -- tokenizer ---------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        pieces = TOKEN.findall(text)
        if self.dummy_prefix and pieces:
            pieces[0] = "\u2581" + pieces[0].lstrip(" ")
        ids = [self._ids.setdefault(piece, len(self._ids)) for piece in pieces]
        return [0, *ids] if add_special_tokens else ids

    def decode_token(self, token_id: int) -> str:
        return self._tokens()[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = self._tokens()
        return "".join(tokens[i] for i in ids if i != 0)

    def _tokens(self) -> dict[int, str]:
        return {i: t for t, i in self._ids.items()}

    @property
    def closing_token_id(self) -> int:
        return self._ids.setdefault("<|end|>", len(self._ids))

    def chat_renderer(self) -> Callable[[list[dict[str, str]]], str] | None:
        if not self.chat:
            return None

        def render(messages: list[dict[str, str]]) -> str:
            turns = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
            return turns + "<|assistant|>"

        return render

    # -- reads -------------------------------------------------------------------

    async def _wait(self, context: str) -> None:
        if self.failure is not None:
            raise self.failure
        if self.gate is not None:
            await self.gate.wait()
        for key, event in self.gates.items():
            if key in context:
                await event.wait()
        if self.failure is not None:
            raise self.failure

    def _ranked(self, context: str, k: int) -> list[tuple[int, float]]:
        scored = [(i, self.script(context, t)) for t, i in self._ids.items() if i != 0]
        return sorted(scored, key=lambda item: item[1], reverse=True)[:k]

    def _cached_tokens(self, ids: Sequence[int], salt: str | None) -> int:
        """Whole blocks of the prompt seen before under the same salt (the last token is
        always computed), then remembers this prompt's blocks."""
        cached = 0
        for end in range(BLOCK, len(ids), BLOCK):
            if (salt, tuple(ids[:end])) not in self._cached:
                break
            cached = end
        for end in range(BLOCK, len(ids) + 1, BLOCK):
            self._cached.add((salt, tuple(ids[:end])))
        return cached

    async def read(
        self,
        prompt_ids: Sequence[int],
        candidates: Sequence[int] = (),
        *,
        top_k: int = 0,
        cache_salt: str | None = None,
    ) -> ReadResult:
        context = self.decode(prompt_ids)
        tokens = self._tokens()
        self.calls.append(
            ReadCall(
                context, len(prompt_ids), tuple(tokens[c] for c in candidates), top_k, cache_salt
            )
        )
        await self._wait(context)
        return ReadResult(
            logprobs={c: self.script(context, tokens[c]) for c in candidates},
            top=self._ranked(context, max(top_k, 1)),
            prompt_tokens=len(prompt_ids),
            cached_tokens=self._cached_tokens(prompt_ids, cache_salt),
        )

    async def score_prompt(
        self, token_ids: Sequence[int], start: int, top_k: int, cache_salt: str | None = None
    ) -> tuple[list[dict[int, float]], int]:
        context = self.decode(token_ids)
        self.calls.append(ReadCall(context, len(token_ids), (), top_k, cache_salt))
        await self._wait(context)
        tokens = self._tokens()
        rows = []
        for i in range(start, len(token_ids)):
            context = self.decode(token_ids[:i])
            row = dict(self._ranked(context, top_k))
            row[token_ids[i]] = self.script(context, tokens[token_ids[i]])
            rows.append(row)
        return rows, 0
