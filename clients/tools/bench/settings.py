"""The benchmark's fixed settings: data sets, contenders, engine arguments, timeouts."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any

# The repository's data folder beside this checkout (--data-dir overrides it).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data"
DATASETS = {"mr": "mr_sentences.jsonl", "bbc": "bbc_news.jsonl", "hwu": "hwu64_intents.jsonl"}
ACCOUNTING_DATASET = "hwu"
# vllm-http runs at labelprob's engine settings; vllm-http-defaults at vLLM's own (opt-in).
HTTP_CONTENDERS = ("vllm-http", "vllm-http-defaults")
CONTENDERS = ("labelprob", "offline", *HTTP_CONTENDERS, "transformers")
LOOPBACK = "127.0.0.1"
SERVED_NAME = "SmolLM2-135M-Instruct"
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 600.0
# A naive run costs one full forward pass per read; this bounds its default text count.
TRANSFORMERS_READ_BUDGET = 100
# Engine settings shared by every vLLM contender. labelprob's server pins these (or gets
# them as vLLM's defaults for an engine it builds itself); vLLM's LLM class and HTTP
# server would otherwise pick other batch limits on CPU (4096/256 and 2048/128).
ENGINE_ARGS: dict[str, Any] = {
    "dtype": "auto",
    "block_size": 32,
    "enable_prefix_caching": True,
    "max_num_seqs": 256,
    "max_num_batched_tokens": 2048,
    "seed": 0,
    "logprobs_mode": "raw_logprobs",
    "max_logprobs": -1,
    "disable_log_stats": True,
}


@functools.cache
def engine_args() -> dict[str, Any]:
    """ENGINE_ARGS with the dtype resolved as labelprob's server resolves it on this CPU
    (`auto` is float32 without native bf16, where vLLM alone would load bf16), so every
    contender computes in the same dtype. Resolved once; callers merge it, never change it."""
    from labelprob.server.dtype import cpu_has_native_bf16, resolve_dtype

    dtype = resolve_dtype(ENGINE_ARGS["dtype"], "cpu", cpu_has_native_bf16())
    return ENGINE_ARGS | {"dtype": dtype}


# Workers run as `python -m WORKER_MODULE --worker KIND`.
WORKER_MODULE = "labelprob.tools.bench"
KV_CACHE_GIB = 2  # labelprob's --kv-cache-gib default


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
