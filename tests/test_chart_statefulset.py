"""StatefulSet mode: one ReadWriteOnce cache claim per replica (volumeClaimTemplates)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from tests.chart_support import (
    CHART_DIR,
    FULLNAME,
    NAMESPACE,
    kinds,
    only,
    parse,
    pod_spec,
    render_raw,
    render_valid,
    server_container,
)

PER_POD = {
    "statefulSet": {"enabled": True},
    "replicaCount": 3,
    "modelCache": {"persistence": {"enabled": True, "size": "30Gi", "storageClass": "fast-ssd"}},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def test_read_write_once_claim_per_replica(chart: helm.Chart) -> None:
    # The same values as a Deployment fail: one RWO claim cannot serve three pods.
    deployment = {k: v for k, v in PER_POD.items() if k != "statefulSet"}
    with pytest.raises(helm.HelmRenderError, match=re.escape("statefulSet.enabled=true")):
        render_raw(chart, deployment)
    docs = render_valid(chart, PER_POD)
    assert "Deployment" not in kinds(docs)
    assert "PersistentVolumeClaim" not in kinds(docs)  # the StatefulSet makes one per pod
    spec = only(docs, "StatefulSet")["spec"]
    assert spec["replicas"] == 3
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "cache"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    # The pod mounts the claim template by name, with no pod-level volume of that name.
    assert "cache" not in {v["name"] for v in pod_spec(docs)["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in server_container(docs)["volumeMounts"]}
    assert mounts["cache"] == "/var/cache/labelprob"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    # A StatefulSet names its pods through a headless Service.
    headless = only(docs, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert spec["selector"]["matchLabels"].items() <= headless["spec"]["selector"].items()
    # No ephemeral-storage request for the cache: it is a claim.
    assert server_container(docs)["resources"]["requests"]["ephemeral-storage"] == "2048Mi"


@pytest.mark.parametrize(
    "autoscaler",
    [
        {"autoscaling": {"enabled": True, "maxReplicas": 5}},
        {"keda": {"enabled": True, "prometheus": {"serverAddress": "http://p:9090"}}},
    ],
)
def test_autoscalers_target_the_statefulset(chart: helm.Chart, autoscaler: dict[str, Any]) -> None:
    docs = render_valid(chart, {**PER_POD, **autoscaler})
    assert "replicas" not in only(docs, "StatefulSet")["spec"]
    scaler = next(d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"))
    target = scaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", FULLNAME)
    if scaler["kind"] == "ScaledObject":
        query = scaler["spec"]["triggers"][0]["metadata"]["query"]
        pod_pattern = re.search(r'pod=~"([^"]+)"', query)
        assert pod_pattern is not None
        assert re.fullmatch(pod_pattern.group(1), f"{FULLNAME}-2")  # StatefulSet pod names
        assert not re.fullmatch(pod_pattern.group(1), f"{FULLNAME}-7d9f8c6b5-x2x4q")
        assert f'namespace="{NAMESPACE}"' in query


def test_statefulset_without_persistence_keeps_the_emptydir(chart: helm.Chart) -> None:
    docs = parse(render_raw(chart, {"statefulSet": {"enabled": True}}))
    spec = only(docs, "StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in spec
    cache = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "cache")
    assert cache["emptyDir"] == {"sizeLimit": "20Gi"}
