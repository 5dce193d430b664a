"""Completion scoring (evals): per-token log-probabilities of a completion after a prompt."""

from __future__ import annotations

from labelprob.server import labels as label_plan
from labelprob.server import scoring
from labelprob.server.classify.admission import ReadBudget
from labelprob.server.classify.types import (
    CompletionRequest,
    ReadEngine,
    ScoredCompletion,
    TokenScore,
    Usage,
)
from labelprob.server.errors import InvalidArgument


class CompletionScorer:
    def __init__(self, engine: ReadEngine, budget: ReadBudget) -> None:
        self.engine = engine
        self.budget = budget
        self.chat = engine.chat_renderer()

    async def score(self, request: CompletionRequest) -> ScoredCompletion:
        """One forward pass over prompt + completion (vLLM's prompt log-probabilities)."""
        prompt = request.prompt
        if request.messages:
            if self.chat is None:
                raise InvalidArgument("messages", "the model has no chat template; send prompt")
            prompt = self.chat([dict(m) for m in request.messages])
        encode = self.engine.encode
        # A raw prompt gets the tokenizer's BOS; a chat template writes its own.
        prompt_ids = encode(prompt, add_special_tokens=not request.messages)
        completion_ids = label_plan.continuation_ids(encode, prompt, request.completion)
        if not completion_ids:
            raise InvalidArgument("completion", "completion tokenizes to no tokens")
        total = len(prompt_ids) + len(completion_ids)
        if total > self.engine.max_model_len:
            raise InvalidArgument(
                "completion",
                f"prompt + completion are {total} tokens; context holds "
                f"{self.engine.max_model_len}",
            )
        top_k = request.top_alternatives
        with self.budget.hold(1):
            rows, cached = await self.engine.score_prompt(
                [*prompt_ids, *completion_ids], len(prompt_ids), top_k, request.cache_salt
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
