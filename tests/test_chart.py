"""Offline tests of the Helm chart in helm/labelprob.

The chart is rendered with helm-python-sdk (Helm's Go SDK through a bundled shared library:
no helm binary, no cluster) for each value set in helm/labelprob/ci/, and every rendered
object is validated against the Kubernetes OpenAPI schemas of a pinned version with
kubernetes-validate. CRD kinds (KEDA ScaledObject, prometheus-operator ServiceMonitor)
have no schema there, so their key fields are asserted directly.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.chart_support import (
    CHART_DIR,
    CI_SETS,
    CRD_KINDS,
    FULLNAME,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    Manifest,
    ci_values,
    env_map,
    hook_pods,
    kinds,
    only,
    parse,
    render_raw,
    render_valid,
    server_container,
)

SERVER_DIR = REPO / "server"
STARTUP_BUDGET_S = 15 * 60

# The `labelprob serve` flags (the server's contract); the chart may only set their env vars.
SERVE_FLAGS = {
    "model", "device", "dtype", "max-model-len", "block-size", "kv-cache-gib",
    "gpu-memory-utilization", "tensor-parallel-size", "max-num-seqs", "seed", "cache-dir",
    "enforce-eager", "host", "port", "metrics-port", "max-labels", "max-batch-texts",
    "max-text-chars", "max-message-bytes", "max-inflight-reads", "default-calibration",
    "default-truncation", "templates-file", "grace-period", "log-level", "log-text",
    "tls-cert", "tls-key", "tls-client-ca",
}  # fmt: skip


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, list[Manifest]]:
    # One render per value set for the whole module keeps the suite well under a second.
    return {name: parse(render_raw(chart, ci_values(name))) for name in CI_SETS}


def test_required_value_sets_exist() -> None:
    assert {"default", "gpu", "autoscaling-keda", "minimal-cpu", "exposed"} <= set(CI_SETS)


def test_default_values_equal_empty_override(chart: helm.Chart) -> None:
    # ci/default-values.yaml must really be the defaults.
    assert parse(render_raw(chart, None)) == parse(render_raw(chart, ci_values("default")))


def test_rendered_objects_per_value_set(rendered: dict[str, list[Manifest]]) -> None:
    # Two `helm test` pods (health, classify); the classify one only without TLS.
    base = ["Deployment", "Pod", "Pod", "PodDisruptionBudget", "Service", "ServiceAccount"]
    assert kinds(rendered["default"]) == base
    assert kinds(rendered["gpu"]) == sorted([*base, "PersistentVolumeClaim"])
    assert kinds(rendered["autoscaling-keda"]) == sorted(
        [*base, "ConfigMap", "ConfigMap", "ScaledObject", "Service", "ServiceMonitor"]
    )
    assert kinds(rendered["minimal-cpu"]) == ["Deployment", "Pod", "Pod", "Service"]
    assert sorted(hook_pods(rendered["tls"])) == ["test-health"]
    assert kinds(rendered["hpa"]) == sorted([*base, "HorizontalPodAutoscaler"])
    assert kinds(rendered["exposed"]) == sorted([*base, "GRPCRoute", "Ingress", "NetworkPolicy"])


@pytest.mark.parametrize("value_set", CI_SETS)
def test_manifests_match_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    validated = 0
    for doc in rendered[value_set]:
        if doc["kind"] in CRD_KINDS:
            continue  # no OpenAPI schema shipped for CRDs; key fields are asserted below
        where = f"{value_set}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{where} invalid at {path}: {err.message}")
        validated += 1
    assert validated >= 3


def test_schema_validation_is_strict(rendered: dict[str, list[Manifest]]) -> None:
    # Guards the test above: the validator must reject unknown fields and wrong types.
    deployment = json.loads(json.dumps(only(rendered["default"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["grpcc"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    deployment = json.loads(json.dumps(only(rendered["default"], "Deployment")))
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("value_set", CI_SETS)
def test_standard_labels(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    for doc in rendered[value_set]:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "labelprob"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "labelprob-0.1.0"
    deployment = only(rendered[value_set], "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "labelprob",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    service = only(rendered[value_set], "Service", FULLNAME)
    assert service["spec"]["selector"] == selector


@pytest.mark.parametrize("value_set", ["default", "gpu", "autoscaling-keda", "minimal-cpu", "hpa"])
def test_probes_are_grpc_on_the_service_grpc_port(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    docs = rendered[value_set]
    container = server_container(docs)
    grpc_port = next(p for p in container["ports"] if p["name"] == "grpc")["containerPort"]
    assert grpc_port == 50051
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[probe_name]
        assert probe["grpc"] == {"port": grpc_port, "service": ""}, probe_name
        assert "exec" not in probe and "httpGet" not in probe and "tcpSocket" not in probe
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= STARTUP_BUDGET_S
    liveness = container["livenessProbe"]
    grace = float(env_map(container)["LABELPROB_GRACE_PERIOD"])
    # A draining pod (NOT_SERVING) must not be killed by liveness before its grace period ends.
    assert liveness["failureThreshold"] * liveness["periodSeconds"] > grace
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= grace + 10
    service_port = next(
        p for p in only(docs, "Service", FULLNAME)["spec"]["ports"] if p["name"] == "grpc"
    )
    assert service_port == {
        "name": "grpc",
        "port": 50051,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def test_gpu_mode(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["gpu"]
    container = server_container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert container["image"] == "labelprob:0.1.0-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["limits"]["memory"] == "32Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["runtimeClassName"] == "nvidia"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "4Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = env_map(container)
    assert env["LABELPROB_DEVICE"] == "cuda"
    assert env["LABELPROB_TENSOR_PARALLEL_SIZE"] == "2"  # defaults to gpu.count
    assert env["LABELPROB_GPU_MEMORY_UTILIZATION"] == "0.85"
    assert env["LABELPROB_MAX_MODEL_LEN"] == "4096"
    # CPU-engine knobs stay out of GPU pods.
    cpu_knobs = {"LABELPROB_KV_CACHE_GIB", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS"}
    assert not cpu_knobs & env.keys()


@pytest.mark.parametrize("value_set", ["default", "autoscaling-keda", "minimal-cpu", "hpa", "tls"])
def test_no_gpu_outside_gpu_mode(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    docs = rendered[value_set]
    container = server_container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert container["image"] == "labelprob:0.1.0-cpu"
    for section in ("limits", "requests"):
        assert "nvidia.com/gpu" not in container["resources"].get(section, {})
    # CPU workers share tensors through /dev/shm too; the CPU size, not the GPU one.
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    assert "nodeSelector" not in pod
    env = env_map(container)
    assert env["LABELPROB_DEVICE"] == "cpu"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert int(env["OMP_NUM_THREADS"]) >= 1
    # The server derives VLLM_CPU_KVCACHE_SPACE (an integer for vLLM) from this flag.
    assert env["LABELPROB_KV_CACHE_GIB"].isdigit() and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "LABELPROB_TENSOR_PARALLEL_SIZE" not in env


@pytest.mark.parametrize("value_set", CI_SETS)
def test_security_context(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    docs = rendered[value_set]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = server_container(docs)
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["runAsNonRoot"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs writable /tmp and cache volumes, and HOME/caches pointed there.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/var/cache/labelprob"] == "cache"
    env = env_map(container)
    for key in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR"):
        assert env[key].startswith("/var/cache/labelprob"), key
    for test_pod in hook_pods(docs).values():
        assert test_pod["spec"]["securityContext"]["runAsNonRoot"] is True
        (test_container,) = test_pod["spec"]["containers"]
        assert test_container["securityContext"]["readOnlyRootFilesystem"] is True
        assert test_container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_model_and_cache_env(rendered: dict[str, list[Manifest]]) -> None:
    default_env = env_map(server_container(rendered["default"]))
    # Embedded model: no --model, and the image's own LABELPROB_CACHE_DIR (pre-converted) stays.
    assert "LABELPROB_MODEL" not in default_env
    assert "LABELPROB_CACHE_DIR" not in default_env
    assert default_env["LABELPROB_PORT"] == "50051"
    assert default_env["LABELPROB_METRICS_PORT"] == "9090"
    assert default_env["LABELPROB_MAX_MESSAGE_BYTES"] == "16777216"  # not 1.6777216e+07
    assert default_env["LABELPROB_HOST"] == "[::]"  # every address family, IPv6-only too
    gpu = rendered["gpu"]
    gpu_env = env_map(server_container(gpu))
    assert gpu_env["LABELPROB_MODEL"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert gpu_env["LABELPROB_CACHE_DIR"] == "/var/cache/labelprob/models"
    assert gpu_env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
    claim = only(gpu, "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    volumes = only(gpu, "Deployment")["spec"]["template"]["spec"]["volumes"]
    cache = next(v for v in volumes if v["name"] == "cache")
    assert cache == {
        "name": "cache",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    minimal_env = env_map(server_container(rendered["minimal-cpu"]))
    assert minimal_env["LABELPROB_ENFORCE_EAGER"] == "true"
    assert minimal_env["LABELPROB_KV_CACHE_GIB"] == "1"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in minimal_env
    # OpenMP threads follow the CPU the pod may use: limit, else request, whole CPUs.
    assert default_env["OMP_NUM_THREADS"] == "2"  # requests.cpu "2", no limit
    assert minimal_env["OMP_NUM_THREADS"] == "1"  # set explicitly


@pytest.mark.parametrize(
    ("resources", "threads"),
    [
        ({"limits": {"cpu": 3}}, "3"),
        ({"limits": {"cpu": "2500m"}, "requests": {"cpu": "4"}}, "2"),  # the limit, rounded down
        ({"requests": {"cpu": "1500m"}}, "1"),
        ({"requests": {"cpu": "250m"}}, "1"),
    ],
)
def test_omp_threads_follow_cpu_resources(
    chart: helm.Chart, resources: dict[str, Any], threads: str
) -> None:
    env = env_map(server_container(parse(render_raw(chart, {"resources": resources}))))
    assert env["OMP_NUM_THREADS"] == threads
    pinned = {"engine": {"cpu": {"ompThreadsBind": ""}}}
    env = env_map(server_container(parse(render_raw(chart, pinned))))
    assert "OMP_NUM_THREADS" not in env and "VLLM_CPU_OMP_THREADS_BIND" not in env


def test_model_override_by_set_string(chart: helm.Chart) -> None:
    values = helm.parse_set_string("model.name=/models/my-model,engine.maxModelLen=2048")
    env = env_map(server_container(parse(render_raw(chart, values))))
    assert env["LABELPROB_MODEL"] == "/models/my-model"
    assert env["LABELPROB_MAX_MODEL_LEN"] == "2048"


def served_flags() -> set[str]:
    """Flags the server declares, if its source is there: "--x-y" literals in server/*.py."""
    found: set[str] = set()
    for source in SERVER_DIR.glob("*.py"):
        found |= set(re.findall(r"""["']--([a-z][a-z0-9-]+)["']""", source.read_text()))
    return found


@pytest.mark.parametrize("value_set", CI_SETS)
def test_env_vars_are_serve_flags(rendered: dict[str, list[Manifest]], value_set: str) -> None:
    env = env_map(server_container(rendered[value_set]))
    chart_flags = {
        name.removeprefix("LABELPROB_").lower().replace("_", "-")
        for name in env
        if name.startswith("LABELPROB_") and name != "LABELPROB_EXTRA_TEST"
    }
    assert chart_flags <= SERVE_FLAGS
    declared = served_flags()
    if declared:  # the server's own flag list, when present, must agree too
        assert chart_flags <= declared, chart_flags - declared


def test_extra_args_and_env(rendered: dict[str, list[Manifest]]) -> None:
    container = server_container(rendered["tls"])
    assert container["args"] == ["--log-level=debug"]
    assert "command" not in container  # the image entrypoint is `labelprob serve`
    assert env_map(container)["LABELPROB_EXTRA_TEST"] == "1"
    assert "args" not in server_container(rendered["default"])


def test_keda_scaled_object(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["autoscaling-keda"]
    scaled = only(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert meta["threshold"] == "64" and meta["activationThreshold"] == "0"
    assert meta["query"].startswith("sum(labelprob_inflight_reads{")
    assert f'namespace="{NAMESPACE}"' in meta["query"] and FULLNAME in meta["query"]
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    # KEDA owns the replica count, and no second HPA competes with it.
    assert "replicas" not in only(docs, "Deployment")["spec"]
    assert "HorizontalPodAutoscaler" not in kinds(docs)


def test_service_monitor(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["autoscaling-keda"]
    monitor = only(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = only(docs, "Service", FULLNAME)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "10s"
    metrics_port = next(p for p in service["spec"]["ports"] if p["name"] == "metrics")
    assert metrics_port["port"] == 9090 and metrics_port["targetPort"] == "metrics"
    headless = only(docs, "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]  # not scraped twice


def test_hpa(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["hpa"]
    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["name"] == FULLNAME
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    cpu, inflight = spec["metrics"]
    assert cpu["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert inflight["pods"]["metric"]["name"] == "labelprob_inflight_reads"
    assert inflight["pods"]["target"] == {"type": "AverageValue", "averageValue": "32"}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert "replicas" not in only(docs, "Deployment")["spec"]


def test_pod_disruption_budget(rendered: dict[str, list[Manifest]]) -> None:
    default = only(rendered["default"], "PodDisruptionBudget")["spec"]
    assert default["maxUnavailable"] == 1 and "minAvailable" not in default
    keda = only(rendered["autoscaling-keda"], "PodDisruptionBudget")["spec"]
    assert keda["minAvailable"] == 1 and "maxUnavailable" not in keda
    assert keda["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE


def test_prompt_templates_from_config_map(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    docs = rendered["autoscaling-keda"]
    config_map = only(docs, "ConfigMap", f"{FULLNAME}-templates")
    assert (
        config_map["data"]["templates.toml"]
        == ci_values("autoscaling-keda")["promptTemplates"]["content"]
    )
    # The example must load in the server as it will in the pod.
    from labelprob.server.prompts import load_templates

    example = tmp_path / "templates.toml"
    example.write_text(config_map["data"]["templates.toml"])
    assert "support_ticket" in load_templates(example)
    container = server_container(docs)
    assert (
        env_map(container)["LABELPROB_TEMPLATES_FILE"] == "/etc/labelprob/templates/templates.toml"
    )
    mount = next(m for m in container["volumeMounts"] if m["name"] == "templates")
    assert mount == {"name": "templates", "mountPath": "/etc/labelprob/templates", "readOnly": True}
    pod = only(docs, "Deployment")["spec"]["template"]
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "templates")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/templates"])


def test_tls_switches_probes_to_exec(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["tls"]
    container = server_container(docs)
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[probe_name]
        assert "grpc" not in probe  # kubelet gRPC probes cannot speak TLS
        command = probe["exec"]["command"]
        assert command[0] == "/usr/local/bin/grpc_health_probe"
        assert "-addr=127.0.0.1:50051" in command and "-tls" in command
        assert "-tls-client-cert=/etc/labelprob/tls/tls.crt" in command
    env = env_map(container)
    assert env["LABELPROB_TLS_CERT"] == "/etc/labelprob/tls/tls.crt"
    assert env["LABELPROB_TLS_KEY"] == "/etc/labelprob/tls/tls.key"
    assert env["LABELPROB_TLS_CLIENT_CA"] == "/etc/labelprob/tls-client-ca/ca.crt"
    volumes = {
        v["name"]: v for v in only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["tls"]["secret"]["secretName"] == "labelprob-tls"
    assert volumes["tls-client-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    test_args = hook_pods(docs)["test-health"]["spec"]["containers"][0]["args"]
    assert "-tls" in test_args and "-tls-client-key=/etc/labelprob/tls/tls.key" in test_args


def test_metrics_disabled(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["minimal-cpu"]
    container = server_container(docs)
    assert [p["name"] for p in container["ports"]] == ["grpc"]
    assert [p["name"] for p in only(docs, "Service")["spec"]["ports"]] == ["grpc"]
    assert env_map(container)["LABELPROB_METRICS_PORT"] == "0"
    template_meta = only(docs, "Deployment")["spec"]["template"]["metadata"]
    assert "prometheus.io/scrape" not in template_meta.get("annotations", {})
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"


def test_scrape_annotations_and_spread(rendered: dict[str, list[Manifest]]) -> None:
    template = only(rendered["default"], "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }
    (spread,) = template["spec"]["topologySpreadConstraints"]
    assert (
        spread["labelSelector"]["matchLabels"]
        == only(rendered["default"], "Deployment")["spec"]["selector"]["matchLabels"]
    )
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_helm_test_hook(rendered: dict[str, list[Manifest]]) -> None:
    pod = hook_pods(rendered["default"])["test-health"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/grpc-ecosystem/grpc-health-probe:v0.4.37"
    assert f"-addr={FULLNAME}.{NAMESPACE}.svc:50051" in container["args"]
    assert "-service=labelprob.v1.ClassifierService" in container["args"]
    assert pod["spec"]["restartPolicy"] == "Never"


def test_notes(chart: helm.Chart) -> None:
    notes = render_raw(chart, ci_values("autoscaling-keda"))["labelprob/templates/NOTES.txt"]
    assert f"{FULLNAME}.{NAMESPACE}.svc:50051" in notes
    assert f"helm test {RELEASE}" in notes
    assert "KEDA ScaledObject, 2-8 replicas" in notes
    assert "startup budget:\n900s" in notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"engine": {"device": "tpu"}}, "/engine/device"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"replicaCunt": 2}, "replicaCunt"),
        ({"server": {"port": 70000}}, "/server/port"),
        ({"server": {"logLevel": "verbose"}}, "/server/logLevel"),
        ({"server": {"defaultCalibration": "platt"}}, "/server/defaultCalibration"),
        ({"engine": {"gpuMemoryUtilization": 1.5}}, "/engine/gpuMemoryUtilization"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"securityContext": {"runAsNonRoot": False}}, "/securityContext/runAsNonRoot"),
        ({"image": {"tag": 5}}, "/image/tag"),
        ({"gpu": {"count": 0}}, "/gpu/count"),
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render_raw(chart, values)


RWO_CACHE: dict[str, Any] = {"modelCache": {"persistence": {"enabled": True}}}
KEDA: dict[str, Any] = {"enabled": True, "prometheus": {"serverAddress": "http://p:9090"}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {
                "autoscaling": {"enabled": True},
                "keda": {"enabled": True, "prometheus": {"serverAddress": "http://p:9090"}},
            },
            "autoscaling.enabled and keda.enabled are mutually exclusive",
        ),
        ({"keda": {"enabled": True}}, "keda.prometheus.serverAddress is required"),
        ({"tls": {"enabled": True}}, "tls.secretName is required"),
        ({"promptTemplates": {"enabled": True}}, "promptTemplates.enabled needs"),
        (
            {"server": {"metricsPort": 0}, "metrics": {"serviceMonitor": {"enabled": True}}},
            "server.metricsPort is 0",
        ),
        ({"engine": {"device": "cuda", "tensorParallelSize": 2}}, "cannot exceed gpu.count"),
        (
            {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
            "needs at least one target",
        ),
        # A ReadWriteOnce claim on several nodes, or held by the old pod while a new one starts.
        (
            {**RWO_CACHE, "replicaCount": 2, "strategy": {"type": "Recreate"}},
            "attaches to one node only, but up to 2 replicas",
        ),
        (
            {**RWO_CACHE, "autoscaling": {"enabled": True, "maxReplicas": 4}},
            "attaches to one node only, but up to 4 replicas",
        ),
        (RWO_CACHE, "maxSurge > 0 (Multi-Attach error)"),
        (
            {**RWO_CACHE, "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}},
            "maxSurge > 0 (Multi-Attach error)",
        ),
        (
            {"keda": {**KEDA, "minReplicaCount": 0}},
            "keda.minReplicaCount 0 can never scale back up",
        ),
        ({"terminationGracePeriodSeconds": 30}, "shorter than preStopSleepSeconds"),
        ({"progressDeadlineSeconds": 600}, "shorter than the startup probe budget (900s)"),
        (
            {"engine": {"cpu": {"reservedCpus": 1}}},
            "reservedCpus only takes effect with engine.cpu.ompThreadsBind=auto",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render_raw(chart, values)


@pytest.mark.parametrize("value_set", CI_SETS)
def test_lint_strict_is_clean(value_set: str) -> None:
    # Lint takes no API versions, so it sees a cluster without CRDs: skip that check here.
    values = {**ci_values(value_set), "capabilityChecks": False}
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    # Severity 1 is info (only "icon is recommended"); 2 warning, 3 error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_schema_errors() -> None:
    # Guards the test above: lint does see values problems.
    report = helm.lint(CHART_DIR, {"engine": {"device": "tpu"}}, strict=True)
    assert any(m["severity"] == 3 and "/engine/device" in m["error"] for m in report["messages"])


def readme_install_sets() -> list[str]:
    """The --set expressions of each `helm install` command in the chart README."""
    readme = (CHART_DIR / "README.md").read_text()
    commands = re.findall(r"^helm install .*?(?<!\\)$", readme, flags=re.MULTILINE | re.DOTALL)
    return [",".join(re.findall(r"--set (\S+)", command)) for command in commands]


def test_readme_install_commands_render(chart: helm.Chart) -> None:
    cpu, gpu = readme_install_sets()
    for expression, device in ((cpu, "cpu"), (gpu, "cuda")):
        docs = parse(render_raw(chart, helm.parse_set_string(expression)))
        for doc in docs:
            if doc["kind"] not in CRD_KINDS:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        container = server_container(docs)
        assert container["image"] == f"registry.example.com/labelprob:0.1.0-{device}"
        assert env_map(container)["LABELPROB_DEVICE"] == device
    assert (
        "nvidia.com/gpu"
        in server_container(parse(render_raw(chart, helm.parse_set_string(gpu))))["resources"][
            "limits"
        ]
    )


def test_chart_metadata(chart: helm.Chart) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2" and meta["name"] == "labelprob"
    assert meta["kubeVersion"] == ">=1.27.0-0"  # GA gRPC probes
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"]


def schema_leaves(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Documented keys: closed objects are walked into, anything else is a leaf."""
    leaves: dict[str, dict[str, Any]] = {}
    for key, sub in node["properties"].items():
        path = f"{prefix}{key}"
        if sub.get("additionalProperties") is False and "properties" in sub:
            leaves |= schema_leaves(sub, f"{path}.")
        elif key != "global":
            leaves[path] = sub
    return leaves


def values_leaves(node: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in node.items():
        sub = schema["properties"][key]
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            paths |= values_leaves(value, sub, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


def test_every_value_is_typed_and_documented(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None and schema["additionalProperties"] is False
    leaves = schema_leaves(schema)
    for path, sub in leaves.items():
        assert sub.get("description"), f"{path} has no description"
        assert {"type", "$ref", "anyOf", "const"} & sub.keys(), f"{path} has no type"
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values_leaves(defaults, schema) == set(leaves)
    readme = (CHART_DIR / "README.md").read_text()
    table_keys = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    assert table_keys == set(leaves)
    assert schema["properties"]["engine"]["properties"]["device"]["enum"] == ["cpu", "cuda"]


# -- rollouts, drains and cluster traps ------------------------------------------------


@pytest.mark.parametrize("value_set", CI_SETS)
def test_rollout_deadline_covers_the_startup_budget(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    deployment = only(rendered[value_set], "Deployment")
    startup = server_container(rendered[value_set])["startupProbe"]
    budget = startup["failureThreshold"] * startup["periodSeconds"]
    # Kubernetes' default of 600 s would report a rollout failed while pods still start.
    assert deployment["spec"]["progressDeadlineSeconds"] >= budget + 600 > 600


@pytest.mark.parametrize("value_set", CI_SETS)
def test_prestop_sleep_is_counted_in_the_grace_period(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    container = server_container(rendered[value_set])
    pod = only(rendered[value_set], "Deployment")["spec"]["template"]["spec"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) == 10
    drain = float(env_map(container)["LABELPROB_GRACE_PERIOD"])
    # The kubelet sends SIGTERM after the hook: the sleep and the drain share one budget.
    assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + drain + 10
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_prestop_can_be_replaced_or_turned_off(chart: helm.Chart) -> None:
    own = {"preStop": {"httpGet": {"path": "/drain", "port": 9090}}}
    docs = render_valid(chart, {"lifecycle": own})
    assert server_container(docs)["lifecycle"] == own
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30 + 15
    docs = render_valid(chart, {"preStopSleepSeconds": 0})
    assert "lifecycle" not in server_container(docs)
    docs = render_valid(chart, {"preStopSleepSeconds": 25, "server": {"gracePeriodSeconds": 40}})
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 25 + 40 + 15


@pytest.mark.parametrize("value_set", CI_SETS)
def test_pod_template_labels_do_not_carry_the_chart_version(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    # A chart bump that changes nothing in the pod must not restart every pod.
    template = only(rendered[value_set], "Deployment")["spec"]["template"]
    assert "helm.sh/chart" not in template["metadata"]["labels"]


def test_read_write_once_cache_with_one_replica_and_no_surge(chart: helm.Chart) -> None:
    for strategy in (
        {"type": "Recreate"},
        {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
    ):
        docs = render_valid(chart, {**RWO_CACHE, "strategy": strategy})
        rendered_strategy = only(docs, "Deployment")["spec"]["strategy"]
        if strategy.get("type") == "Recreate":
            assert rendered_strategy == {"type": "Recreate"}  # no rollingUpdate block
        else:
            assert rendered_strategy["rollingUpdate"]["maxSurge"] == 0
        assert "PersistentVolumeClaim" in kinds(docs)
    shared = {"modelCache": {"persistence": {"enabled": True, "accessModes": ["ReadWriteMany"]}}}
    docs = render_valid(chart, {**shared, "replicaCount": 3})
    assert only(docs, "Deployment")["spec"]["replicas"] == 3


def test_keda_fallback_and_scale_to_zero_with_an_outside_trigger(
    chart: helm.Chart, rendered: dict[str, list[Manifest]]
) -> None:
    spec = only(rendered["autoscaling-keda"], "ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}  # minReplicaCount
    cron = {
        "type": "cron",
        "metadata": {
            "timezone": "UTC",
            "start": "0 8 * * *",
            "end": "0 20 * * *",
            "desiredReplicas": "1",
        },
    }
    values = {"keda": {**KEDA, "minReplicaCount": 0, "extraTriggers": [cron]}}
    spec = only(render_valid(chart, values), "ScaledObject")["spec"]
    assert spec["minReplicaCount"] == 0
    assert [t["type"] for t in spec["triggers"]] == ["prometheus", "cron"]
    assert spec["triggers"][1] == cron
    assert spec["fallback"]["replicas"] == 1
    values = {"keda": {**KEDA, "fallback": None}}
    assert "fallback" not in only(render_valid(chart, values), "ScaledObject")["spec"]


def test_long_release_names_stay_within_63_characters(chart: helm.Chart) -> None:
    release = "r" * 53  # Helm's longest release name
    values = {
        "service": {"headless": True},
        "modelCache": {"persistence": {"enabled": True}},
        "strategy": {"type": "Recreate"},
        "promptTemplates": {"enabled": True, "content": "[t]\n"},
    }
    docs = render_valid(chart, values, name=release)
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 for n in names), [n for n in names if len(n) > 63]
    assert len(set(names) - {f"{release}-labelprob"}) == 5  # the suffixed ones stay distinct
    for suffix in ("-headless", "-cache", "-templates", "-test-health", "-test-classify"):
        assert sum(n.endswith(suffix) for n in names) == 1, suffix


def test_extra_env_overrides_the_charts_variables_by_name(chart: helm.Chart) -> None:
    extra = [
        {"name": "LABELPROB_LOG_LEVEL", "value": "debug"},
        {"name": "OMP_NUM_THREADS", "value": "3"},
        {"name": "MY_SETTING", "value": "x"},
    ]
    container = server_container(render_valid(chart, {"extraEnv": extra}))
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names))
    env = env_map(container)
    assert (env["LABELPROB_LOG_LEVEL"], env["OMP_NUM_THREADS"], env["MY_SETTING"]) == (
        "debug",
        "3",
        "x",
    )
