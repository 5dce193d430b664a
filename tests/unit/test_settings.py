"""Settings from one source: the dataclasses make the flags, their environment fallbacks,
the request limits and the classifier's defaults; the defaults are the README's."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from labelprob.server.config import (
    ClassifySettings,
    EngineSettings,
    ServerSettings,
    add_serve_arguments,
    settings_from_args,
)
from labelprob.server.scoring import Calibration, Method

README = Path(__file__).resolve().parents[2] / "README.md"
SETTINGS_CLASSES = (ServerSettings, EngineSettings, ClassifySettings)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelprob serve")
    add_serve_arguments(p)
    return p


def leaf_fields() -> list[dataclasses.Field]:
    return [
        f
        for cls in SETTINGS_CLASSES
        for f in dataclasses.fields(cls)
        if f.name not in {"engine", "classify"}
    ]


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata["flag"]


def test_every_setting_has_one_flag_and_help_lists_it() -> None:
    help_text = parser().format_help()
    words = " ".join(help_text.split())
    flags = [flag_of(f) for f in leaf_fields()]
    assert len(flags) == len(set(flags)) == 36
    for flag in flags:
        assert re.search(rf"^  {re.escape(flag)}[ ,]", help_text, re.MULTILINE), flag
        env = "LABELPROB_" + flag.removeprefix("--").replace("-", "_").upper()
        assert f"[env {env};" in words or f"[env {env}]" in words


def test_every_setting_has_help() -> None:
    assert all(f.metadata["help"] for f in leaf_fields())


def test_no_flags_default_to_the_dataclass_defaults() -> None:
    assert settings_from_args(parser().parse_args([])) == ServerSettings()


def test_the_default_method_is_combined() -> None:
    assert ServerSettings().classify.default_method is Method.COMBINED


def test_flags_set_every_field() -> None:
    args = [
        "--model", "m", "--device", "cpu", "--dtype", "float32", "--max-model-len", "99",
        "--block-size", "16", "--kv-cache-gib", "3", "--gpu-memory-utilization", "0.5",
        "--tensor-parallel-size", "2", "--max-num-seqs", "7", "--seed", "5", "--cache-dir", "/c",
        "--enforce-eager", "--default-calibration", "domain_pmi", "--default-method", "channel",
        "--default-truncation", "reject", "--channel-shortlist", "12",
        "--max-inflight-reads", "11", "--host", "::1", "--port", "1", "--metrics-port", "2",
        "--max-labels", "3", "--max-batch-texts", "4", "--max-text-chars", "5",
        "--max-message-bytes", "6", "--templates-file", "/t.toml", "--grace-period", "1.5",
        "--log-level", "debug", "--log-text", "--no-align-prompts", "--tls-cert", "/a",
        "--tls-key", "/b", "--tls-client-ca", "/d", "--tenant-header", "x-t",
        "--cache-salt-secret", "s", "--otlp-endpoint", "o:1",
    ]  # fmt: skip
    s = settings_from_args(parser().parse_args(args))
    assert s.engine == EngineSettings(
        model="m", device="cpu", dtype="float32", max_model_len=99, block_size=16,
        kv_cache_gib=3.0, gpu_memory_utilization=0.5, tensor_parallel_size=2, max_num_seqs=7,
        seed=5, cache_dir=Path("/c"), enforce_eager=True,
    )  # fmt: skip
    assert s.classify == ClassifySettings(
        default_calibration=Calibration.DOMAIN_PMI,
        default_method=Method.CHANNEL,
        channel_shortlist=12,
        default_truncation="reject",
        max_inflight_reads=11,
    )
    assert not s.classify.default_truncate
    assert (s.host, s.port, s.metrics_port) == ("::1", 1, 2)
    assert (s.max_labels, s.max_batch_texts, s.max_text_chars, s.max_message_bytes) == (3, 4, 5, 6)
    assert (s.templates_file, s.grace_period_s, s.log_level) == (Path("/t.toml"), 1.5, "debug")
    assert s.log_text and not s.align_prompts
    assert (s.tls_cert, s.tls_key, s.tls_client_ca) == (Path("/a"), Path("/b"), Path("/d"))
    assert (s.tenant_header, s.cache_salt_secret, s.otlp_endpoint) == ("x-t", "s", "o:1")


@pytest.mark.parametrize(
    ("env", "value", "read"),
    [
        ("LABELPROB_MAX_MODEL_LEN", "2048", lambda s: s.engine.max_model_len == 2048),
        ("LABELPROB_GRACE_PERIOD", "7.5", lambda s: s.grace_period_s == 7.5),
        (
            "LABELPROB_DEFAULT_CALIBRATION",
            "none",
            lambda s: s.classify.default_calibration is Calibration.NONE,
        ),
        ("LABELPROB_MAX_INFLIGHT_READS", "12", lambda s: s.classify.max_inflight_reads == 12),
        (
            "LABELPROB_DEFAULT_METHOD",
            "direct",
            lambda s: s.classify.default_method is Method.DIRECT,
        ),
        ("LABELPROB_LOG_TEXT", "true", lambda s: s.log_text),
        ("LABELPROB_ALIGN_PROMPTS", "0", lambda s: not s.align_prompts),
        ("LABELPROB_TLS_CERT", "/etc/cert.pem", lambda s: s.tls_cert == Path("/etc/cert.pem")),
        ("LABELPROB_TENANT_HEADER", "x-tenant", lambda s: s.tenant_header == "x-tenant"),
    ],
)
def test_environment_variables_are_the_fallback(monkeypatch, env: str, value: str, read) -> None:
    monkeypatch.setenv(env, value)
    assert read(settings_from_args(parser().parse_args([])))


def test_a_flag_wins_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LABELPROB_PORT", "7000")
    assert settings_from_args(parser().parse_args(["--port", "7001"])).port == 7001


@pytest.mark.parametrize(
    "args",
    [
        ["--default-calibration", "sometimes"],
        ["--default-method", "guess"],
        ["--default-truncation", "maybe"],
        ["--port", "x"],
    ],
)
def test_bad_values_are_refused(args: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(args)
    assert "invalid" in capsys.readouterr().err


def readme_defaults() -> dict[str, str]:
    """The README's settings table: flag -> documented default (flags sharing a row split)."""
    section = README.read_text().split("## Server settings", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`--"):
            continue
        flags = re.findall(r"`(--[a-z-]+)`", cells[0])
        values = [v.strip().strip("`") for v in re.split(r",| / ", cells[1])]
        if len(values) == len(flags):
            out.update(zip(flags, values, strict=True))
    return out


def test_defaults_are_the_documented_ones() -> None:
    documented = readme_defaults()
    s = ServerSettings()
    expected = {
        "--device": s.engine.device,
        "--dtype": s.engine.dtype,
        "--kv-cache-gib": f"{s.engine.kv_cache_gib:g}",
        "--gpu-memory-utilization": f"{s.engine.gpu_memory_utilization:g}",
        "--port": str(s.port),
        "--metrics-port": str(s.metrics_port),
        "--default-calibration": s.classify.default_calibration.value,
        "--default-method": s.classify.default_method.value,
        "--default-truncation": s.classify.default_truncation,
        "--max-labels": str(s.max_labels),
        "--max-batch-texts": str(s.max_batch_texts),
        "--max-text-chars": str(s.max_text_chars),
        "--max-message-bytes": f"{s.max_message_bytes // 2**20} MiB",
        "--max-inflight-reads": str(s.classify.max_inflight_reads),
    }
    assert {flag: documented.get(flag) for flag in expected} == expected
