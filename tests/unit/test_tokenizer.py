"""The engine's direct tokenizer path gives exactly transformers' ids, or is not used."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelprob.server.tokenization import direct_encoder
from tests.tiny_model import build_tokenizer

TEXTS = ["Label: positive", "Play some jazz music.", "  spaced\tout\n", "ünïcödé 42", ""]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return build_tokenizer(Path(tmp_path_factory.mktemp("tok")))


def test_direct_encoder_matches_transformers(tokenizer) -> None:
    direct = direct_encoder(tokenizer)
    assert direct is not None
    for text in TEXTS:
        for special in (False, True):
            want = tokenizer.encode(text, add_special_tokens=special)
            assert direct.encode(text, add_special_tokens=special).ids == want


def test_direct_encoder_is_not_used_when_transformers_differs(tokenizer) -> None:
    class Shifted:
        """A tokenizer class with a Python-side rule: the Rust tokenizer alone disagrees."""

        backend_tokenizer = tokenizer.backend_tokenizer

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [0, *tokenizer.encode(text, add_special_tokens=add_special_tokens)]

    assert direct_encoder(Shifted()) is None
    assert direct_encoder(object()) is None  # a slow tokenizer: no Rust backend
