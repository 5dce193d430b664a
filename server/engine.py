"""The only module that imports vLLM: engine lifecycle, one-token label reads, abort on cancel."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from labelprob.server.config import EngineSettings
from labelprob.server.cpu_quota import CpuBudget, cpu_budget
from labelprob.server.dtype import cpu_has_native_bf16, resolve_dtype
from labelprob.server.errors import EngineUnavailable
from labelprob.server.tokenization import chat_renderer, direct_encoder

log = structlog.get_logger(__name__)

# How often the watchdog checks that the engine process is alive.
WATCHDOG_PERIOD_S = 1.0


@dataclass(frozen=True)
class ReadResult:
    """What one read of ``prompt`` returned."""

    logprobs: dict[int, float]  # full-vocabulary logprob of each candidate token
    top: list[tuple[int, float]]  # most likely next tokens, best first
    prompt_tokens: int
    cached_tokens: int


def flat_position(flat: Any, position: int) -> list[tuple[int, float]]:
    """(token id, logprob) pairs of one position of vLLM's FlatLogprobs, read from its lists."""
    start, end = flat.start_indices[position], flat.end_indices[position]
    return list(zip(flat.token_ids[start:end], flat.logprobs[start:end], strict=True))


def configure_cpu_environment(settings: EngineSettings, cpu: CpuBudget | None = None) -> None:
    """Environment the CPU build reads at engine start (set only where the operator did not)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(settings.kv_cache_gib))))
    # vLLM's "auto" binding keeps one core per worker free for its scheduler,
    # which on a 2-core machine leaves a single compute thread. Binding the
    # worker to every core the process may use makes both cores compute, unless
    # a cgroup CPU quota allows less: then as many unpinned threads as the quota.
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        cpu = cpu or cpu_budget()
        if cpu.pin:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cpu.cores)
        else:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
            os.environ.setdefault("OMP_NUM_THREADS", str(cpu.threads))
        log.info("cpu threads", bind=os.environ["VLLM_CPU_OMP_THREADS_BIND"], quota=cpu.quota)
    # The CPU build's ahead-of-time compile cache fails to load ("'function' object has no
    # attribute 'finalize_loading'"), so every start compiled the model again; torch's own
    # compile cache loads: a restart takes 34 s instead of about 95.
    os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")


def detect_device(requested: str) -> str:
    if requested != "auto":
        return requested
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


class Engine:
    """vLLM's AsyncLLM with prefix caching, raw log-probs, and reads of chosen next tokens."""

    def __init__(self, llm: object, model_name: str, device: str) -> None:
        from vllm import SamplingParams
        from vllm.inputs import tokens_input

        self._llm = llm
        self._sampling_params = SamplingParams
        self._tokens_input = tokens_input
        self._ids = itertools.count()
        self.model_name = model_name
        self.device = device
        self.tokenizer = llm.get_tokenizer()  # type: ignore[attr-defined]
        self._backend = direct_encoder(self.tokenizer)
        config = llm.model_config  # type: ignore[attr-defined]
        self.max_model_len: int = config.max_model_len
        self.vocab_size: int = config.get_vocab_size()
        self.block_size: int = llm.vllm_config.cache_config.block_size  # type: ignore[attr-defined]
        self._stopped = False

    @classmethod
    def start(cls, settings: EngineSettings, model_path: str, model_name: str) -> Engine:
        """Starts the engine (model load, compile, KV-cache allocation): tens of seconds."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        device = detect_device(settings.device)
        if device == "cpu":
            configure_cpu_environment(settings)
        dtype = resolve_dtype(
            settings.dtype, device, native_bf16=device != "cpu" or cpu_has_native_bf16()
        )
        if dtype != settings.dtype:
            log.info("dtype", requested=settings.dtype, using=dtype, reason="no native bf16")
        block_size = settings.block_size or (32 if device == "cpu" else None)
        args = AsyncEngineArgs(
            model=model_path,
            served_model_name=model_name,
            dtype=dtype,
            max_model_len=settings.max_model_len,
            block_size=block_size,
            enable_prefix_caching=True,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            enforce_eager=settings.enforce_eager,
            max_num_seqs=settings.max_num_seqs,
            seed=settings.seed,
            # Scores are read before temperature or penalties could touch them.
            logprobs_mode="raw_logprobs",
            max_logprobs=-1,
            disable_log_stats=True,
        )
        log.info("starting engine", model=model_name, device=device, block_size=block_size)
        return cls(AsyncLLM.from_engine_args(args), model_name, device)

    # -- tokenizer -----------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=add_special_tokens).ids
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def chat_renderer(self) -> Callable[[list[dict[str, str]]], str] | None:
        return chat_renderer(self.tokenizer)

    # -- reads ---------------------------------------------------------------------

    def _one_token_params(self, **logprobs: Any) -> Any:
        """One greedy token, not detokenized, with the given log-prob options, returned as
        vLLM's flat logprobs (plain lists, not a Logprob object per returned token)."""
        # Built per read and never reused: vLLM need not deep-copy it (skip_clone).
        return self._sampling_params(
            max_tokens=1,
            temperature=0.0,
            detokenize=False,
            skip_clone=True,
            flat_logprobs=True,
            **logprobs,
        )

    async def _generate(
        self, token_ids: Sequence[int], params: Any, cache_salt: str | None
    ) -> tuple[str, Any]:
        """Runs one request to its end: (request id, final output or None).

        A failure after the engine process died is EngineUnavailable. Cancelling the
        awaiting task aborts the engine request.
        """
        self.ensure_running()
        engine_input = self._tokens_input(list(token_ids), cache_salt=cache_salt)
        request_id = f"lp-{next(self._ids)}"
        final = None
        try:
            async for output in self._llm.generate(engine_input, params, request_id):  # type: ignore[attr-defined]
                final = output
        except Exception as exc:
            if self.errored:
                raise EngineUnavailable(f"engine is not running: {exc}") from exc
            raise
        return request_id, final

    async def read(
        self,
        prompt_ids: Sequence[int],
        candidates: Sequence[int] = (),
        *,
        top_k: int = 0,
        cache_salt: str | None = None,
    ) -> ReadResult:
        """One forward pass over ``prompt_ids``; log-probs of the next token.

        With ``candidates``, their full-vocabulary log-probs (vLLM's
        ``logprob_token_ids``); with ``top_k``, the k most likely tokens instead.
        Cancelling the awaiting task aborts the engine request.
        """
        if candidates:
            params = self._one_token_params(logprob_token_ids=list(candidates))
        else:
            params = self._one_token_params(logprobs=max(top_k, 1))
        request_id, final = await self._generate(prompt_ids, params, cache_salt)
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            raise RuntimeError(f"engine returned no logprobs for request {request_id}")
        position = dict(flat_position(final.outputs[0].logprobs, 0))
        finite = ((tid, lp) for tid, lp in position.items() if lp > float("-inf"))
        return ReadResult(
            logprobs={tid: position[tid] for tid in candidates},
            # The k best without sorting every returned token.
            top=heapq.nlargest(max(top_k, 1), finite, key=lambda item: item[1]),
            prompt_tokens=len(prompt_ids),
            cached_tokens=final.num_cached_tokens or 0,
        )

    async def score_prompt(
        self,
        token_ids: Sequence[int],
        start: int,
        top_k: int,
        cache_salt: str | None = None,
    ) -> tuple[list[dict[int, float]], int]:
        """Log-probs of each token from ``start`` on given the tokens before it, plus the top k.

        One forward pass with ``prompt_logprobs``. vLLM's default for such requests is not
        to read the prefix cache, because it leaves the rows of cached positions unwritten.
        Only rows from ``start - 1`` on are needed here, so the cache is read, and the
        request runs again without it in the rare case that the cache reached past that
        row (the same prompt scored before).
        """
        rows, cached = await self._score_rows(token_ids, start, top_k, cache_salt, True)
        if rows is None:
            rows, cached = await self._score_rows(token_ids, start, top_k, cache_salt, False)
        assert rows is not None  # without the cache nothing is cached
        return rows, cached

    async def _score_rows(
        self,
        token_ids: Sequence[int],
        start: int,
        top_k: int,
        cache_salt: str | None,
        read_cache: bool,
    ) -> tuple[list[dict[int, float]] | None, int]:
        """The rows from ``start`` on, or None when the cache reached past row ``start - 1``
        (vLLM leaves the rows of cached positions unwritten)."""
        params = self._one_token_params(
            prompt_logprobs=max(top_k, 0), skip_reading_prefix_cache=not read_cache
        )
        request_id, final = await self._generate(token_ids, params, cache_salt)
        if final is None or final.prompt_logprobs is None:
            raise RuntimeError(f"engine returned no prompt logprobs for request {request_id}")
        cached = final.num_cached_tokens or 0
        if cached > start - 1:
            return None, cached
        flat = final.prompt_logprobs
        rows = [dict(flat_position(flat, i)) for i in range(start, len(flat))]
        return rows, cached

    @property
    def closing_token_id(self) -> int | None:
        """The token that ends an assistant turn (the tokenizer's end-of-sequence)."""
        return self.tokenizer.eos_token_id

    # -- lifecycle -----------------------------------------------------------------

    @property
    def errored(self) -> bool:
        return bool(getattr(self._llm, "errored", False))

    @property
    def running(self) -> bool:
        return not self._stopped and not self.errored

    def ensure_running(self) -> None:
        if self._stopped:
            raise EngineUnavailable("engine is shut down")
        if self.errored:
            raise EngineUnavailable("engine process has died")

    def num_unfinished_requests(self) -> int:
        return self._llm.get_num_unfinished_requests()  # type: ignore[attr-defined]

    async def watch(self, on_death: Callable[[], None]) -> None:
        """Calls ``on_death`` once if the engine process dies; returns when stopped."""
        while not self._stopped:
            if self.errored:
                log.error("engine process died")
                on_death()
                return
            await asyncio.sleep(WATCHDOG_PERIOD_S)

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._llm.shutdown()  # type: ignore[attr-defined]

    @staticmethod
    def version() -> str:
        import vllm

        return vllm.__version__
