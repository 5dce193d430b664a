"""The reference computation: label log-probabilities from a direct transformers forward pass.

Independent of the server's code: token ids come straight from the tokenizer, the
log-probabilities from ``log_softmax`` over the model's logits. The prompt's layout is
the documented one: prefix, text and suffix tokenized apart (the text between two fixed
parts), newlines after the text to a KV-block boundary for multi-read prompts, and each
label tokenized as the continuation of the prompt.
"""

from __future__ import annotations

import math

import torch


def softmax(logprobs: list[float]) -> list[float]:
    """Scores normalized over the labels, as probabilities."""
    top = max(logprobs)
    weights = [math.exp(x - top) for x in logprobs]
    return [w / sum(weights) for w in weights]


def encode(tokenizer, text: str, *, bos: bool = False) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=bos))


def prompt_ids(
    tokenizer, prefix: str, text: str, suffix: str, *, bos: bool, block: int = 0
) -> list[int]:
    """Prefix, text and suffix tokenized apart; with ``block``, newlines after the text until
    the whole prompt is a multiple of ``block`` tokens long."""
    head = encode(tokenizer, prefix, bos=bos) + encode(tokenizer, text)
    tail = encode(tokenizer, suffix)
    pad = (block - (len(head) + len(tail)) % block) % block if block else 0
    newline = encode(tokenizer, "\n")[-1]
    return head + [newline] * pad + tail


def tokens_after(tokenizer, prompt: str, continuation: str) -> list[int]:
    """The continuation's tokens as the tokenizer produces them after ``prompt``: tokenize
    prompt + continuation and keep what follows the prompt's own tokens. Where the boundary
    merges (the prompt's tokens would change), the continuation is tokenized alone, since
    the prompt is sent as it is."""
    base = encode(tokenizer, prompt)
    whole = encode(tokenizer, prompt + continuation)
    if whole[: len(base)] == base:
        return whole[len(base) :]
    return encode(tokenizer, continuation)


def label_logprobs(model, prompt: list[int], label: list[int]) -> list[float]:
    """log P(label token i | prompt, label tokens < i) for each token: log_softmax + chain rule."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + label])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    start = len(prompt) - 1  # the position that predicts the first label token
    return [logprobs[start + i, t].item() for i, t in enumerate(label)]
