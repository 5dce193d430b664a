"""`--dtype auto` on a CPU without native bf16 means float32; every other choice is kept."""

from __future__ import annotations

import pytest

from labelprob.server.dtype import resolve_dtype

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("requested", "device", "native_bf16", "expected"),
    [
        ("auto", "cpu", False, "float32"),
        ("auto", "cpu", True, "auto"),
        ("auto", "cuda", False, "auto"),
        ("bfloat16", "cpu", False, "bfloat16"),
        ("float16", "cpu", False, "float16"),
        ("float32", "cpu", True, "float32"),
    ],
)
def test_resolve_dtype(requested: str, device: str, native_bf16: bool, expected: str) -> None:
    assert resolve_dtype(requested, device, native_bf16) == expected
