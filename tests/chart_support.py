"""Rendering helpers shared by the chart tests (tests/test_chart*.py).

The chart is rendered with helm-python-sdk: Helm's Go SDK through a bundled shared library,
no helm binary, no cluster. Every render states the cluster's Kubernetes version and the
extra API versions it serves, as `helm template --kube-version --api-versions` does, so the
chart's capability checks see a cluster with (or without) the CRDs they need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml
from helm_python import _native

REPO = Path(__file__).resolve().parents[1]
CHART_DIR = REPO / "helm" / "labelprob"
CI_DIR = CHART_DIR / "ci"

# Pinned so results do not move with kubernetes-validate upgrades; 1.31 is the oldest
# minor still widely supported by managed Kubernetes.
KUBE_VERSION = "1.31.0"
RELEASE = "lp"
NAMESPACE = "ml"
FULLNAME = "lp-labelprob"

# CRD-based kinds the chart can create, as `.Capabilities.APIVersions.Has` names them.
CRD_APIS = {
    "ServiceMonitor": "monitoring.coreos.com/v1/ServiceMonitor",
    "ScaledObject": "keda.sh/v1alpha1/ScaledObject",
    "GRPCRoute": "gateway.networking.k8s.io/v1/GRPCRoute",
}
CRD_KINDS = set(CRD_APIS)

Manifest = dict[str, Any]


def ci_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text()) or {}
    return values


CI_SETS = sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


def render_raw(
    chart: helm.Chart,
    values: dict[str, Any] | None,
    *,
    name: str = RELEASE,
    api_versions: Iterable[str] = CRD_APIS.values(),
) -> dict[str, str]:
    """`helm template` against a cluster serving `api_versions` (default: every CRD above).

    Chart.render does not take API versions, but the SDK's native render reads them from
    its options (`api_versions`, `kube_version`), the same fields as Helm's own flags."""
    options = {
        "name": name,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{KUBE_VERSION}",
        "api_versions": list(api_versions),
    }
    payload = _native.call_string(
        "helm_render",
        chart._raw(),
        None if values is None else json.dumps(values),
        json.dumps(options),
    )
    rendered: dict[str, str] = json.loads(payload)
    return rendered


def parse(rendered: dict[str, str]) -> list[Manifest]:
    """Every object of every template; NOTES.txt and empty (disabled) templates skipped."""
    docs: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def validate(doc: Manifest) -> None:
    """Strict Kubernetes schema validation; CRD kinds have no schema there."""
    if doc["kind"] not in CRD_KINDS:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def render_valid(chart: helm.Chart, values: dict[str, Any], name: str = RELEASE) -> list[Manifest]:
    """Renders and validates every non-CRD object against the Kubernetes schemas."""
    docs = parse(render_raw(chart, values, name=name))
    for doc in docs:
        validate(doc)
    return docs


def only(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, got {len(matches)}"
    return matches[0]


def kinds(docs: list[Manifest]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def workload(docs: list[Manifest]) -> Manifest:
    """The Deployment or StatefulSet running the server."""
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    return found


def pod_spec(docs: list[Manifest]) -> Manifest:
    spec: Manifest = workload(docs)["spec"]["template"]["spec"]
    return spec


def server_container(docs: list[Manifest]) -> Manifest:
    containers = pod_spec(docs)["containers"]
    (container,) = [c for c in containers if c["name"] == "server"]
    assert containers[0] is container  # first: `kubectl exec` and logs default to it
    return container


def env_map(container: Manifest) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for item in container["env"]:
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def hook_pods(docs: list[Manifest]) -> dict[str, Manifest]:
    """`helm test` pods by name suffix (test-health, test-classify)."""
    pods = [d for d in docs if d["kind"] == "Pod"]
    return {p["metadata"]["name"].removeprefix(f"{FULLNAME}-"): p for p in pods}
