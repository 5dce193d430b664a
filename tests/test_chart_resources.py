"""Resources the chart derives from other values: ephemeral storage, memory, /dev/shm."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from tests.chart_support import CHART_DIR, pod_spec, render_raw, render_valid, server_container

GI = 1024**3
MI = 1024**2
CLAIM = {"modelCache": {"persistence": {"enabled": True}}}
SMALL = {"memoryOverheadGiB": 0.5}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def resources(chart: helm.Chart, values: dict[str, Any]) -> dict[str, Any]:
    container = server_container(render_valid(chart, values))
    found: dict[str, Any] = container["resources"]
    return found


def mebibytes(n_bytes: float) -> str:
    return f"{math.ceil(n_bytes / MI)}Mi"


@pytest.mark.parametrize(
    ("values", "disk_bytes"),
    [
        ({}, 20 * GI + 2 * GI),  # the cache emptyDir and /tmp (defaults)
        ({"modelCache": {"emptyDir": {"sizeLimit": "10G"}}, "tmpSizeLimit": "5M"}, 10e9 + 5e6),
        # A claim holds the cache: only /tmp is node disk.
        ({**CLAIM, "strategy": {"type": "Recreate"}}, 2 * GI),
    ],
)
def test_ephemeral_storage_follows_the_emptydirs(
    chart: helm.Chart, values: dict[str, Any], disk_bytes: float
) -> None:
    res = resources(chart, values)
    assert res["requests"]["ephemeral-storage"] == mebibytes(disk_bytes)
    # The limit adds headroom (1Gi) for logs and the writable layer.
    assert res["limits"]["ephemeral-storage"] == mebibytes(disk_bytes + GI)
    assert res["requests"]["memory"] == "6Gi" and res["limits"]["memory"] == "8Gi"  # kept


def test_ephemeral_storage_set_by_hand_or_off(chart: helm.Chart) -> None:
    own = {"requests": {"cpu": "2", "ephemeral-storage": "5Gi"}, "limits": {"memory": "8Gi"}}
    res = resources(chart, {"resources": own})
    assert res["requests"]["ephemeral-storage"] == "5Gi"  # the operator's value wins
    assert res["limits"]["ephemeral-storage"] == mebibytes(22 * GI + GI)
    res = resources(chart, {"ephemeralStorage": {"enabled": False}})
    assert "ephemeral-storage" not in res["requests"] | res["limits"]


@pytest.mark.parametrize(
    ("values", "field", "needed"),
    [
        ({"engine": {"kvCacheGiB": 7}}, "limits", 9),  # 8Gi limit < 7 + 2
        ({"resources": {"limits": {"memory": "3G"}}, "engine": {"kvCacheGiB": 1}}, "limits", 3),
        ({"resources": {"requests": {"memory": "3Gi"}, "limits": None}}, "requests", 4),
        (
            {"engine": {"kvCacheGiB": 4, "cpu": {"memoryOverheadGiB": 6}}},
            "limits",
            10,
        ),
    ],
)
def test_memory_below_the_kv_cache_fails(
    chart: helm.Chart, values: dict[str, Any], field: str, needed: int
) -> None:
    message = f"resources.{field}.memory"
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)) as failure:
        render_raw(chart, values)
    assert "is below engine.kvCacheGiB" in str(failure.value)
    assert f"at least {needed}Gi" in str(failure.value)


@pytest.mark.parametrize(
    "values",
    [
        {"engine": {"kvCacheGiB": 6}},  # 8Gi = 6 + 2: just enough
        {"resources": {"limits": {"memory": "3500Mi"}}, "engine": {"kvCacheGiB": 1}},
        {"resources": {"limits": {"memory": "2Gi"}}, "engine": {"kvCacheGiB": 1, "cpu": SMALL}},
        {"resources": {"requests": {"cpu": "1"}, "limits": None}},  # no memory: nothing to check
        # GPU mode keeps the KV cache in GPU memory.
        {"engine": {"device": "cuda", "kvCacheGiB": 64}},
    ],
)  # fmt: skip
def test_memory_that_covers_the_kv_cache_renders(chart: helm.Chart, values: dict[str, Any]) -> None:
    render_valid(chart, values)


def test_shared_memory_sizes(chart: helm.Chart) -> None:
    for values, size in (
        ({"engine": {"cpu": {"sharedMemorySize": "2Gi"}}}, "2Gi"),
        ({"engine": {"device": "cuda"}, "gpu": {"sharedMemorySize": "8Gi"}}, "8Gi"),
    ):
        volumes = pod_spec(render_valid(chart, values))["volumes"]
        shm = next(v for v in volumes if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": size}
