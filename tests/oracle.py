"""The reference computation: label log-probabilities from a direct transformers forward pass."""

from __future__ import annotations

import torch

from labelprob.server.labels import block_padding, continuation_ids
from labelprob.server.prompts import PromptParts


def prompt_ids(tokenizer, parts: PromptParts, text: str) -> list[int]:
    """Prompt tokens exactly as the server builds them: prefix, text, suffix tokenized apart."""
    return (
        tokenizer.encode(parts.prefix, add_special_tokens=parts.add_special_tokens)
        + tokenizer.encode(text, add_special_tokens=False)
        + tokenizer.encode(parts.suffix, add_special_tokens=False)
    )


def aligned_prompt_ids(tokenizer, parts: PromptParts, text: str, block: int) -> list[int]:
    """The prompt as the server builds it for multi-read (FULL) scoring: newlines after the
    text end it on a KV-block boundary."""
    prefix = tokenizer.encode(parts.prefix, add_special_tokens=parts.add_special_tokens)
    body = tokenizer.encode(text, add_special_tokens=False)
    suffix = tokenizer.encode(parts.suffix, add_special_tokens=False)
    pad = block_padding(len(prefix) + len(body) + len(suffix), block)
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    return prefix + body + [newline] * pad + suffix


def continuation_of(tokenizer, anchor: str, text: str) -> list[int]:
    def encode(s: str) -> list[int]:
        return tokenizer.encode(s, add_special_tokens=False)

    return list(continuation_ids(encode, anchor, text))


def label_ids(tokenizer, parts: PromptParts, name: str) -> list[int]:
    return continuation_of(tokenizer, parts.suffix, parts.label_lead + name)


def label_logprobs(model, prompt: list[int], label: list[int]) -> list[float]:
    """log P(label token i | prompt, label tokens < i) for each token: log_softmax + chain rule."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + label])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt) - 1  # the position that predicts the first label token
    return [logprobs[start + i, t].item() for i, t in enumerate(label)]
