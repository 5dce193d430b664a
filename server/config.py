"""Server settings: command-line flags, each with an environment-variable fallback."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "LABELPROB_"


@dataclass(frozen=True)
class EngineSettings:
    """What the vLLM engine is started with."""

    model: str | None = None  # None: the embedded default model
    device: str = "auto"  # auto, cpu or cuda
    dtype: str = "auto"
    max_model_len: int | None = None
    block_size: int | None = None  # None: the platform's default
    kv_cache_gib: float = 2.0  # CPU: KV-cache space; CUDA: ignored (see gpu_memory_utilization)
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    max_num_seqs: int = 256
    seed: int = 0
    cache_dir: Path | None = None


@dataclass(frozen=True)
class ServerSettings:
    """How the gRPC server runs, and the request limits it enforces."""

    host: str = "[::]"  # every address family: IPv4, IPv6 and dual stack
    port: int = 50051
    metrics_port: int = 9090  # 0 turns the Prometheus endpoint off
    max_labels: int = 512
    max_batch_texts: int = 1024
    max_text_chars: int = 200_000
    max_message_bytes: int = 16 * 1024 * 1024
    max_inflight_reads: int = 16384  # queued engine reads before RESOURCE_EXHAUSTED
    default_calibration: str = "auto"
    # Pad multi-read (FULL) prompts to a KV-block boundary: far fewer recomputed tokens.
    align_prompts: bool = True
    default_truncation: str = "truncate"
    templates_file: Path | None = None
    grace_period_s: float = 30.0
    log_level: str = "info"
    log_text: bool = False  # log request texts (off: texts never reach the logs)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate (mTLS)
    # Metadata key naming the caller's tenant; each tenant gets its own prefix-cache salt.
    tenant_header: str = ""
    cache_salt_secret: str = ""
    otlp_endpoint: str = ""  # set: export a trace span per RPC over OTLP/gRPC
    engine: EngineSettings = field(default_factory=EngineSettings)


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name, None)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every `labelprob serve` flag; each defaults to LABELPROB_<FLAG> from the environment."""
    d, e = ServerSettings(), EngineSettings()

    def opt(flag: str, kind: type, default: object, help_text: str) -> None:
        env_name = flag.removeprefix("--").replace("-", "_")
        env_value = _env(env_name, None)
        value = kind(env_value) if env_value is not None else default
        parser.add_argument(
            flag,
            type=kind,
            default=value,
            help=f"{help_text} [env {ENV_PREFIX}{env_name.upper()}; default {default}]",
        )

    def flag(name: str, default: bool, help_text: str) -> None:
        env_name = name.removeprefix("--").replace("-", "_")
        parser.add_argument(
            name,
            action=argparse.BooleanOptionalAction,
            default=_env_bool(env_name, default),
            help=f"{help_text} [env {ENV_PREFIX}{env_name.upper()}]",
        )

    g = parser.add_argument_group("model and engine")
    opt("--model", str, None, "Hugging Face model id or local folder; unset: embedded SmolLM2-135M")
    opt("--device", str, e.device, "auto, cpu or cuda")
    opt("--dtype", str, e.dtype, "model dtype: auto, bfloat16, float16, float32")
    opt("--max-model-len", int, e.max_model_len, "context length in tokens; unset: the model's")
    opt("--block-size", int, e.block_size, "KV-cache block size; unset: 32 on CPU, vLLM's on GPU")
    opt("--kv-cache-gib", float, e.kv_cache_gib, "CPU KV-cache size in GiB")
    opt("--gpu-memory-utilization", float, e.gpu_memory_utilization, "GPU memory share for vLLM")
    opt("--tensor-parallel-size", int, e.tensor_parallel_size, "GPUs per model replica")
    opt("--max-num-seqs", int, e.max_num_seqs, "engine batch size limit (sequences per step)")
    opt("--seed", int, e.seed, "engine seed")
    opt("--cache-dir", Path, None, "where the converted embedded model is kept")
    flag("--enforce-eager", e.enforce_eager, "skip torch.compile / CUDA graphs: faster start")
    del g

    s = parser.add_argument_group("server")
    opt("--host", str, d.host, "address to listen on")
    opt("--port", int, d.port, "gRPC port")
    opt("--metrics-port", int, d.metrics_port, "Prometheus metrics HTTP port; 0 disables")
    opt("--max-labels", int, d.max_labels, "most labels per request")
    opt("--max-batch-texts", int, d.max_batch_texts, "most texts per ClassifyBatch")
    opt("--max-text-chars", int, d.max_text_chars, "longest text accepted, in characters")
    opt("--max-message-bytes", int, d.max_message_bytes, "largest gRPC message accepted")
    opt("--max-inflight-reads", int, d.max_inflight_reads, "engine reads queued before overload")
    opt(
        "--default-calibration",
        str,
        d.default_calibration,
        "auto (batch for 8+ texts, else contextual), none, contextual, domain_pmi",
    )
    opt("--default-truncation", str, d.default_truncation, "truncate or reject")
    opt("--templates-file", Path, None, "TOML file of named prompt templates")
    opt("--grace-period", float, d.grace_period_s, "seconds to finish in-flight RPCs on SIGTERM")
    opt("--log-level", str, d.log_level, "debug, info, warning or error")
    flag("--log-text", d.log_text, "include request texts in logs")
    flag("--align-prompts", d.align_prompts, "pad FULL-mode prompts to a KV-block boundary")
    opt("--tls-cert", Path, None, "server certificate (PEM); enables TLS")
    opt("--tls-key", Path, None, "server private key (PEM)")
    opt("--tls-client-ca", Path, None, "CA bundle for client certificates; enables mutual TLS")
    opt("--tenant-header", str, d.tenant_header, "metadata key of the tenant id (cache isolation)")
    opt("--cache-salt-secret", str, d.cache_salt_secret, "secret mixed into tenant cache salts")
    opt("--otlp-endpoint", str, d.otlp_endpoint, "OpenTelemetry collector (OTLP/gRPC) for traces")
    del s


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    engine = EngineSettings(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        kv_cache_gib=args.kv_cache_gib,
        gpu_memory_utilization=args.gpu_memory_utilization,
        tensor_parallel_size=args.tensor_parallel_size,
        enforce_eager=args.enforce_eager,
        max_num_seqs=args.max_num_seqs,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )
    return ServerSettings(
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        max_labels=args.max_labels,
        max_batch_texts=args.max_batch_texts,
        max_text_chars=args.max_text_chars,
        max_message_bytes=args.max_message_bytes,
        max_inflight_reads=args.max_inflight_reads,
        default_calibration=args.default_calibration,
        default_truncation=args.default_truncation,
        templates_file=args.templates_file,
        grace_period_s=args.grace_period,
        log_level=args.log_level,
        log_text=args.log_text,
        align_prompts=args.align_prompts,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        tenant_header=args.tenant_header,
        cache_salt_secret=args.cache_salt_secret,
        otlp_endpoint=args.otlp_endpoint,
        engine=engine,
    )
