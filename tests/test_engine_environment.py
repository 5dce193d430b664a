"""The environment the server sets for vLLM's CPU build, and what an operator set is kept."""

from __future__ import annotations

import os

import pytest

from labelprob.server.config import EngineSettings
from labelprob.server.cpu_quota import CpuBudget, cpu_budget
from labelprob.server.engine import configure_cpu_environment

KNOBS = (
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_USE_AOT_COMPILE",
    "OMP_NUM_THREADS",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_bind_every_core_and_reuse_the_compile_cache(clean_env) -> None:
    configure_cpu_environment(EngineSettings(kv_cache_gib=3.0), CpuBudget((0, 1, 2, 3), None))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1,2,3"
    assert "OMP_NUM_THREADS" not in os.environ
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"


def test_this_machine(clean_env) -> None:
    # Whatever this machine's cgroup says, the result follows the budget read from it.
    budget = cpu_budget()
    assert budget.cores == tuple(sorted(os.sched_getaffinity(0)))
    configure_cpu_environment(EngineSettings())
    if budget.pin:
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, budget.cores))
    else:
        assert os.environ["OMP_NUM_THREADS"] == str(budget.threads)


def test_quota_below_the_cores_runs_that_many_unpinned_threads(clean_env) -> None:
    configure_cpu_environment(EngineSettings(), CpuBudget(tuple(range(64)), 2.0))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_quota_above_the_cores_still_pins(clean_env) -> None:
    configure_cpu_environment(EngineSettings(), CpuBudget((0, 1), 4.0))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1"


def test_operator_settings_win(clean_env) -> None:
    clean_env.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    clean_env.setenv("OMP_NUM_THREADS", "7")
    clean_env.setenv("VLLM_USE_AOT_COMPILE", "1")
    configure_cpu_environment(EngineSettings(), CpuBudget(tuple(range(64)), 2.0))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert os.environ["OMP_NUM_THREADS"] == "7"
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "1"
