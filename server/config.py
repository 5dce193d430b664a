"""Server settings, one source: each dataclass field is a setting, and its metadata makes
the `labelprob serve` flag, the LABELPROB_<FLAG> environment fallback and the help line."""

from __future__ import annotations

import argparse
import enum
import os
import types
import typing
from dataclasses import Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from labelprob.server.scoring import Calibration, Method

ENV_PREFIX = "LABELPROB_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def about(flag: str, help_text: str, *, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """A setting's metadata: its `labelprob serve` flag and help line."""
    return {"flag": flag, "help": help_text, "choices": choices}


@dataclass(frozen=True)
class EngineSettings:
    """model and engine"""

    model: str | None = field(
        default=None,
        metadata=about(
            "--model", "Hugging Face model id or local folder; unset: embedded SmolLM2-135M"
        ),
    )
    device: str = field(default="auto", metadata=about("--device", "auto, cpu or cuda"))
    dtype: str = field(
        default="auto",
        metadata=about(
            "--dtype",
            "model dtype: auto (float32 on a CPU without native bf16, else the model's),"
            " bfloat16, float16, float32",
        ),
    )
    max_model_len: int | None = field(
        default=None,
        metadata=about("--max-model-len", "context length in tokens; unset: the model's"),
    )
    block_size: int | None = field(
        default=None,
        metadata=about("--block-size", "KV-cache block size; unset: 32 on CPU, vLLM's on GPU"),
    )
    # CPU: KV-cache space; CUDA: ignored (see gpu_memory_utilization).
    kv_cache_gib: float = field(
        default=2.0, metadata=about("--kv-cache-gib", "CPU KV-cache size in GiB")
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata=about("--gpu-memory-utilization", "GPU memory share for vLLM")
    )
    tensor_parallel_size: int = field(
        default=1, metadata=about("--tensor-parallel-size", "GPUs per model replica")
    )
    max_num_seqs: int = field(
        default=256,
        metadata=about("--max-num-seqs", "engine batch size limit (sequences per step)"),
    )
    seed: int = field(default=0, metadata=about("--seed", "engine seed"))
    cache_dir: Path | None = field(
        default=None, metadata=about("--cache-dir", "where the converted embedded model is kept")
    )
    enforce_eager: bool = field(
        default=False,
        metadata=about("--enforce-eager", "skip torch.compile / CUDA graphs: faster start"),
    )


@dataclass(frozen=True)
class ClassifySettings:
    """classification"""

    default_calibration: Calibration = field(
        default=Calibration.AUTO,
        metadata=about(
            "--default-calibration",
            "calibration of requests that leave it unset: auto (with the channel: online "
            "for 3+ labels, else contextual; without: batch for 8+ texts, else contextual), "
            "none, contextual, domain_pmi, online",
        ),
    )
    default_method: Method = field(
        default=Method.COMBINED,
        metadata=about(
            "--default-method",
            "scoring method of requests that leave it unset: direct, combined (direct "
            "pooled with the noisy channel), channel",
        ),
    )
    # The channel costs the text's tokens once per label. A shortlist trades accuracy for
    # that cost (README, "The channel shortlist"), so it is off by default.
    channel_shortlist: int = field(
        default=0,
        metadata=about(
            "--channel-shortlist",
            "COMBINED reads the channel only for this many labels, the direct read's best "
            "(0: every label)",
        ),
    )
    default_truncation: str = field(
        default="truncate",
        metadata=about(
            "--default-truncation", "a text longer than the context", choices=("truncate", "reject")
        ),
    )
    # FULL's deeper reads: one request per trie node, or one request per label whose prompt
    # log-probs give all its tokens. Paths take fewer requests but each costs more: on a
    # 2-core CPU they ran 1.6x slower on 77 long intents (README, Performance).
    full_reads: str = field(
        default="trie",
        metadata=about(
            "--full-reads",
            "how FULL reads labels after the first token: trie (a request per trie node) "
            "or paths (a request per label)",
            choices=("trie", "paths"),
        ),
    )
    max_inflight_reads: int = field(
        default=16384, metadata=about("--max-inflight-reads", "engine reads queued before overload")
    )

    @property
    def default_truncate(self) -> bool:
        return self.default_truncation == "truncate"


@dataclass(frozen=True)
class ServerSettings:
    """server"""

    # Every address family: IPv4, IPv6 and dual stack.
    host: str = field(default="[::]", metadata=about("--host", "address to listen on"))
    port: int = field(default=50051, metadata=about("--port", "gRPC port"))
    metrics_port: int = field(
        default=9090, metadata=about("--metrics-port", "Prometheus metrics HTTP port; 0 disables")
    )
    max_labels: int = field(default=512, metadata=about("--max-labels", "most labels per request"))
    max_batch_texts: int = field(
        default=1024, metadata=about("--max-batch-texts", "most texts per ClassifyBatch")
    )
    max_text_chars: int = field(
        default=200_000, metadata=about("--max-text-chars", "longest text accepted, in characters")
    )
    max_message_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=about("--max-message-bytes", "largest gRPC message accepted"),
    )
    templates_file: Path | None = field(
        default=None, metadata=about("--templates-file", "TOML file of named prompt templates")
    )
    grace_period_s: float = field(
        default=30.0,
        metadata=about("--grace-period", "seconds to finish in-flight RPCs on SIGTERM"),
    )
    log_level: str = field(
        default="info", metadata=about("--log-level", "debug, info, warning or error")
    )
    # Off: request texts never reach the logs.
    log_text: bool = field(
        default=False, metadata=about("--log-text", "include request texts in logs")
    )
    # Multi-read (FULL) prompts padded to a KV-block boundary: far fewer recomputed tokens.
    align_prompts: bool = field(
        default=True,
        metadata=about("--align-prompts", "pad FULL-mode prompts to a KV-block boundary"),
    )
    tls_cert: Path | None = field(
        default=None, metadata=about("--tls-cert", "server certificate (PEM); enables TLS")
    )
    tls_key: Path | None = field(
        default=None, metadata=about("--tls-key", "server private key (PEM)")
    )
    tls_client_ca: Path | None = field(
        default=None,
        metadata=about("--tls-client-ca", "CA bundle for client certificates; enables mutual TLS"),
    )
    # Each tenant gets its own prefix-cache salt.
    tenant_header: str = field(
        default="",
        metadata=about("--tenant-header", "metadata key of the tenant id (cache isolation)"),
    )
    cache_salt_secret: str = field(
        default="", metadata=about("--cache-salt-secret", "secret mixed into tenant cache salts")
    )
    otlp_endpoint: str = field(
        default="",
        metadata=about("--otlp-endpoint", "OpenTelemetry collector (OTLP/gRPC) for traces"),
    )
    engine: EngineSettings = field(default_factory=EngineSettings)
    classify: ClassifySettings = field(default_factory=ClassifySettings)


def flag_name(f: Field) -> str:
    return f.metadata["flag"]


def env_name(f: Field) -> str:
    return ENV_PREFIX + flag_name(f).removeprefix("--").replace("-", "_").upper()


def _value_type(annotation: Any) -> Any:
    """``int | None`` -> int; other annotations as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (kind,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kind
    return annotation


def _shown(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def _setting_fields(cls: type) -> list[tuple[Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, _value_type(hints[f.name])) for f in fields(cls)]


def _add_group(parser: argparse.ArgumentParser, cls: type) -> None:
    group = parser.add_argument_group((cls.__doc__ or cls.__name__).strip())
    defaults = cls()
    for f, kind in _setting_fields(cls):
        if is_dataclass(kind):
            continue
        default = getattr(defaults, f.name)
        env = env_name(f)
        raw = os.environ.get(env)
        if kind is bool:
            value = default if raw is None else raw.strip().lower() in TRUE_WORDS
            group.add_argument(
                flag_name(f),
                action=argparse.BooleanOptionalAction,
                default=value,
                help=f"{f.metadata['help']} [env {env}; default {default}]",
            )
            continue
        extra: dict[str, Any] = {}
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            extra = {"choices": list(kind), "metavar": "{" + ",".join(m.value for m in kind) + "}"}
        elif f.metadata["choices"]:
            extra = {"choices": f.metadata["choices"]}
        group.add_argument(
            flag_name(f),
            type=kind,
            default=default if raw is None else kind(raw),
            help=f"{f.metadata['help']} [env {env}; default {_shown(default)}]",
            **extra,
        )


def _dataclasses(cls: type) -> list[type]:
    """``cls`` and the settings dataclasses nested in it, depth first, nested ones first."""
    nested = [kind for _, kind in _setting_fields(cls) if is_dataclass(kind)]
    return [c for kind in nested for c in _dataclasses(kind)] + [cls]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds a flag per setting; each defaults to LABELPROB_<FLAG> from the environment."""
    for cls in _dataclasses(ServerSettings):
        _add_group(parser, cls)


def _from_args(cls: type, args: argparse.Namespace) -> Any:
    values = {}
    for f, kind in _setting_fields(cls):
        if is_dataclass(kind):
            values[f.name] = _from_args(kind, args)
        else:
            values[f.name] = getattr(args, flag_name(f).removeprefix("--").replace("-", "_"))
    return cls(**values)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return _from_args(ServerSettings, args)
