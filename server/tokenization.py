"""The model's tokenizer as the server uses it: a fast private encoder, and the chat template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Strings the direct tokenizer path must encode exactly as transformers does before it is used.
ENCODE_PROBES = (" positive", "Hello, world!", "naïve café 12,345.67", "  two  spaces\n\tand tab")


def direct_encoder(tokenizer: object) -> object | None:
    """A private copy of a fast tokenizer's Rust tokenizer, when it encodes like transformers.

    Every request tokenizes its text on the event loop. Through transformers, one text
    goes through the batch path (and vLLM's pool of tokenizer copies); under load that
    costs several times the tokenization itself. The copy is used only by this process's
    event loop, and only if it gives transformers' ids on the probes (some tokenizer
    classes add Python-side rules, and those keep the transformers path).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    for text in ENCODE_PROBES:
        for special in (False, True):
            want = list(tokenizer.encode(text, add_special_tokens=special))  # type: ignore[attr-defined]
            if copy.encode(text, add_special_tokens=special).ids != want:
                log.info("tokenizer: transformers path", reason=f"differs on {text!r}")
                return None
    return copy


def chat_renderer(tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
    """Renders chat messages with the tokenizer's template (assistant turn opened, thinking
    off), or None when it has none."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    return render
