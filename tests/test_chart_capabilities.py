"""CRD-based objects render only where the cluster serves their API, unless forced.

`.Capabilities.APIVersions` is what `helm install` discovers from the cluster and what
`helm template --api-versions` states; the renders here state it explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from tests.chart_support import CHART_DIR, CRD_APIS, kinds, parse, render_raw

KEDA = {"enabled": True, "prometheus": {"serverAddress": "http://p:9090"}}
SERVICE_MONITOR = {"metrics": {"serviceMonitor": {"enabled": True}}}
# Kind -> (values enabling it, the switch the failure names).
FEATURES: dict[str, tuple[dict[str, Any], str]] = {
    "ServiceMonitor": (SERVICE_MONITOR, "metrics.serviceMonitor.enabled"),
    "ScaledObject": ({"keda": KEDA}, "keda.enabled"),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.mark.parametrize("kind", sorted(FEATURES))
def test_crd_object_fails_without_its_api(chart: helm.Chart, kind: str) -> None:
    values, switch = FEATURES[kind]
    api = CRD_APIS[kind]
    others = [v for k, v in CRD_APIS.items() if k != kind]
    message = f"{switch} needs the {api} API, which this cluster does not serve"
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)) as failure:
        render_raw(chart, values, api_versions=others)
    # The message says how to get past it: install the CRD, state the API, or force.
    assert f"--api-versions {api}" in str(failure.value)
    assert "capabilityChecks=false" in str(failure.value)


@pytest.mark.parametrize("kind", sorted(FEATURES))
def test_crd_object_renders_where_its_api_is_served(chart: helm.Chart, kind: str) -> None:
    values, _ = FEATURES[kind]
    assert kind in kinds(parse(render_raw(chart, values, api_versions=[CRD_APIS[kind]])))


@pytest.mark.parametrize("kind", sorted(FEATURES))
def test_crd_object_renders_anyway_when_forced(chart: helm.Chart, kind: str) -> None:
    values, _ = FEATURES[kind]
    forced = {**values, "capabilityChecks": False}
    assert kind in kinds(parse(render_raw(chart, forced, api_versions=[])))


def test_no_crd_needed_by_default(chart: helm.Chart) -> None:
    docs = parse(render_raw(chart, None, api_versions=[]))
    assert not set(CRD_APIS) & set(kinds(docs))
