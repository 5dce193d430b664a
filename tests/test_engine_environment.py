"""The environment the server sets for vLLM's CPU build, and what an operator set is kept."""

from __future__ import annotations

import os

import pytest

from labelprob.server.config import EngineSettings
from labelprob.server.engine import configure_cpu_environment

KNOBS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_USE_AOT_COMPILE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_bind_every_core_and_reuse_the_compile_cache(clean_env) -> None:
    configure_cpu_environment(EngineSettings(kv_cache_gib=3.0))
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == cores
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"


def test_operator_settings_win(clean_env) -> None:
    clean_env.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    clean_env.setenv("VLLM_USE_AOT_COMPILE", "1")
    configure_cpu_environment(EngineSettings())
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "1"
