"""How the service is reached: NetworkPolicy, Ingress for gRPC, Gateway API GRPCRoute."""

from __future__ import annotations

import re
from collections.abc import Iterator

import helm_python as helm
import pytest

from tests.chart_support import (
    CHART_DIR,
    FULLNAME,
    RELEASE,
    Manifest,
    ci_values,
    kinds,
    only,
    parse,
    render_raw,
    render_valid,
    server_container,
)


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def exposed(chart: helm.Chart) -> list[Manifest]:
    return render_valid(chart, ci_values("exposed"))


def test_off_by_default(chart: helm.Chart) -> None:
    docs = parse(render_raw(chart, None))
    assert not {"NetworkPolicy", "Ingress", "GRPCRoute"} & set(kinds(docs))


def container_ports(docs: list[Manifest]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in server_container(docs)["ports"]}


def test_network_policy_admits_the_chosen_peers_per_port(exposed: list[Manifest]) -> None:
    policy = only(exposed, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]  # egress stays open: Hub downloads, DNS
    selector = only(exposed, "Deployment")["spec"]["selector"]
    assert policy["podSelector"] == selector
    ports = container_ports(exposed)
    grpc_rule, metrics_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": ports["grpc"], "protocol": "TCP"}]
    chosen = ci_values("exposed")["networkPolicy"]["grpcFrom"]
    # The operator's peers, plus this release's `helm test` pods.
    test_pods = {"app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "test"}
    assert grpc_rule["from"] == [*chosen, {"podSelector": {"matchLabels": test_pods}}]
    assert metrics_rule["ports"] == [{"port": ports["metrics"], "protocol": "TCP"}]
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    assert metrics_rule["from"] == [{"namespaceSelector": {"matchLabels": monitoring}}]


def test_network_policy_open_grpc_and_no_metrics_port(chart: helm.Chart) -> None:
    values = {"networkPolicy": {"enabled": True}, "server": {"metricsPort": 0}}
    (rule,) = only(render_valid(chart, values), "NetworkPolicy")["spec"]["ingress"]
    # No peers listed: any source may reach gRPC (a rule without `from` admits all).
    assert rule == {"ports": [{"port": 50051, "protocol": "TCP"}]}


def test_ingress_for_grpc(exposed: list[Manifest]) -> None:
    ingress = only(exposed, "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/backend-protocol": "GRPC"
    }
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [
        {"hosts": ["labelprob.example.com"], "secretName": "labelprob-ingress-tls"}
    ]
    (rule,) = spec["rules"]
    assert rule["host"] == "labelprob.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/" and path["pathType"] == "Prefix"
    backend = path["backend"]["service"]
    service = only(exposed, "Service", FULLNAME)
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert backend["port"]["name"] == "grpc"


def test_ingress_without_hosts_routes_every_host(chart: helm.Chart) -> None:
    (rule,) = only(render_valid(chart, {"ingress": {"enabled": True}}), "Ingress")["spec"]["rules"]
    assert "host" not in rule


def test_grpc_route(exposed: list[Manifest]) -> None:
    route = only(exposed, "GRPCRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert spec["parentRefs"] == ci_values("exposed")["grpcRoute"]["parentRefs"]
    assert spec["hostnames"] == ["grpc.labelprob.example.com"]
    (rule,) = spec["rules"]
    service = only(exposed, "Service", FULLNAME)
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert rule["backendRefs"] == [{"name": service["metadata"]["name"], "port": grpc_port}]


def test_grpc_route_needs_a_parent_and_the_gateway_api(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape("grpcRoute.parentRefs is required")):
        render_raw(chart, {"grpcRoute": {"enabled": True}})
    values = {"grpcRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]}}
    message = "grpcRoute.enabled needs the gateway.networking.k8s.io/v1/GRPCRoute API"
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render_raw(chart, values, api_versions=[])
    forced = {**values, "capabilityChecks": False}
    assert "GRPCRoute" in kinds(parse(render_raw(chart, forced, api_versions=[])))


def test_init_and_extra_containers_with_their_volumes(chart: helm.Chart) -> None:
    fetch = {
        "name": "fetch-model",
        "image": "busybox:1.36",
        "command": ["cp", "-r", "/src/model", "/models/"],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
    }
    proxy = {"name": "auth-proxy", "image": "envoyproxy/envoy:v1.31.0", "ports": [
        {"name": "proxy", "containerPort": 8443}
    ]}  # fmt: skip
    values = {
        "initContainers": [fetch],
        "extraContainers": [proxy],
        "extraVolumes": [{"name": "models", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "model": {"name": "/models/model"},
    }
    docs = render_valid(chart, values)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["initContainers"] == [fetch]
    assert [c["name"] for c in pod["containers"]] == ["server", "auth-proxy"]
    assert pod["containers"][1] == proxy
    assert {"name": "models", "emptyDir": {}} in pod["volumes"]
    mounts = server_container(docs)["volumeMounts"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in mounts
    default_pod = only(parse(render_raw(chart, None)), "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in default_pod and len(default_pod["containers"]) == 1
