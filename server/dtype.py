"""The model dtype `--dtype auto` resolves to.

vLLM's CPU build loads a bf16 model as bf16 whatever the CPU. Without native bf16
arithmetic (AVX512-BF16 or AMX on x86) that is the slow path: on an AVX2-only EPYC a
bf16 matmul the size of SmolLM2's output layer took 12 s against 0.09 s in float32, and a
one-label read 0.76 s against 0.23 s through the server. So `auto` means float32 on such
CPUs and vLLM's own choice everywhere else; an explicit dtype is always kept.
"""

from __future__ import annotations

import platform

AUTO = "auto"
FLOAT32 = "float32"


def resolve_dtype(requested: str, device: str, native_bf16: bool) -> str:
    """The dtype to start the engine with."""
    if requested == AUTO and device == "cpu" and not native_bf16:
        return FLOAT32
    return requested


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively. Only x86 is checked: elsewhere vLLM's
    choice stands (it already avoids bf16 on Apple CPUs without it)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
