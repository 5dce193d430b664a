"""Production behaviour on dedicated servers: overload, deadlines, SIGTERM, engine death, TLS,
metrics and logs. These servers are stopped or killed by the tests, so they are not shared."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from labelprob.client import AsyncClient, ClassifyParams, Client
from labelprob.v1 import classifier_pb2 as pb
from tests.conftest import ServerProcess, tiny_server_args

pytestmark = pytest.mark.engine

LABELS = ["alarm_set", "alarm_query", "calendar_set", "play_music"]
FULL = pb.ScoringOptions(mode=pb.SCORING_MODE_FULL, calibration=pb.CALIBRATION_NONE)


def metric(server: ServerProcess, name: str) -> float:
    """Sum of a Prometheus metric's samples (all label sets) from the server's /metrics."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        # A name may end inside the label set ('..._total{code="OK"'): a prefix match then.
        if line.startswith(name) and (name.endswith('"') or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def health_status(target: str, credentials: grpc.ChannelCredentials | None = None) -> int:
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status


# -- certificates for TLS ------------------------------------------------------------


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost and a client certificate, as PEM files."""
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("labelprob test CA", ca_key, None, ca_key, ca=True)
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(who, key, ca, ca_key, ca=False)
        files[f"{who}_cert"] = folder / f"{who}.pem"
        files[f"{who}_key"] = folder / f"{who}.key"
        files[f"{who}_cert"].write_bytes(cert.public_bytes(pem))
        files[f"{who}_key"].write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return files


# -- dedicated servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dedicated(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """Two servers started together: a small-queue one and a mutual-TLS one."""
    folder = tmp_path_factory.mktemp("production")
    pki = write_pki(folder)
    limited = ServerProcess(
        "limited",
        tiny_server_args(
            tiny_model_dir,
            "--max-inflight-reads",
            "6",
            "--grace-period",
            "30",
            "--tenant-header",
            "x-tenant",
            "--cache-salt-secret",
            "test-secret",
        ),
        folder / "limited.log",
    )
    secure = ServerProcess(
        "mtls",
        tiny_server_args(
            tiny_model_dir,
            "--tls-cert",
            str(pki["server_cert"]),
            "--tls-key",
            str(pki["server_key"]),
            "--tls-client-ca",
            str(pki["ca"]),
        ),
        folder / "mtls.log",
    )
    limited.start()
    secure.start()
    try:
        yield {"limited": limited, "mtls": secure, "pki": pki}
    finally:
        limited.stop()
        secure.stop()


@pytest.fixture(scope="module")
def limited(dedicated: dict[str, object]) -> ServerProcess:
    server = dedicated["limited"]
    assert isinstance(server, ServerProcess)
    server.wait_serving()
    return server


def mtls_credentials(pki: dict[str, Path], with_client_cert: bool) -> grpc.ChannelCredentials:
    if with_client_cert:
        return grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].read_bytes(),
            private_key=pki["client_key"].read_bytes(),
            certificate_chain=pki["client_cert"].read_bytes(),
        )
    return grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())


@pytest.fixture(scope="module")
def mtls(dedicated: dict[str, object]) -> tuple[ServerProcess, dict[str, Path]]:
    server, pki = dedicated["mtls"], dedicated["pki"]
    assert isinstance(server, ServerProcess) and isinstance(pki, dict)
    deadline = time.monotonic() + 900
    credentials = mtls_credentials(pki, True)
    while time.monotonic() < deadline:
        assert server.process is not None and server.process.poll() is None, server.log_tail()
        try:
            if health_status(f"localhost:{server.port}", credentials) == 1:
                return server, pki
        except grpc.RpcError:
            pass
        time.sleep(1)
    pytest.fail(f"mTLS server not SERVING:\n{server.log_tail()}")


# -- overload and deadlines ----------------------------------------------------------

# One FIRST_TOKEN read a request: the unit the admission bound counts.
ONE_READ = ClassifyParams(
    ["yes", "no"],
    options=pb.ScoringOptions(mode=pb.SCORING_MODE_FIRST_TOKEN, calibration=pb.CALIBRATION_NONE),
)


def burst(server: ServerProcess, n: int, text: str, retries: bool) -> list[object]:
    """n concurrent one-read requests; results or the RPC errors, in order."""

    async def send() -> list[object]:
        async with AsyncClient(server.target, timeout=120, retries=retries) as client:
            calls = [client.classify(f"{text} {i} " * 20, ONE_READ) for i in range(n)]
            return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(send())


def test_overload_gets_resource_exhausted_at_once_and_admitted_requests_succeed(
    limited: ServerProcess,
) -> None:
    # One read a request; the server's queue holds 6 reads.
    results = burst(limited, 24, "set an alarm number", retries=False)
    ok = [r for r in results if isinstance(r, pb.Classification)]
    rejected = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) + len(rejected) == 24, [r for r in results if r not in ok + rejected]
    assert ok and rejected
    for err in rejected:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err)
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        assert retry, "RESOURCE_EXHAUSTED without RetryInfo"
    for result in ok:
        assert sum(lb.probability for lb in result.labels) == pytest.approx(1.0, abs=1e-9)


def test_client_retries_carry_a_burst_through_overload(limited: ServerProcess) -> None:
    # The client's gRPC retry policy waits out the server's pushback and tries again.
    results = burst(limited, 12, "retry me", retries=True)
    assert all(isinstance(r, pb.Classification) for r in results), results


def test_expired_deadline_frees_the_engine(limited: ServerProcess) -> None:
    labels = [f"topic_{i}" for i in range(60)]
    params = ClassifyParams(labels, options=FULL)
    text = "play some music in the kitchen " * 30
    with Client(limited.target, timeout=120) as client:
        started = time.perf_counter()
        client.classify(text, params)
        full_time = time.perf_counter() - started
        cancelled_before = metric(limited, 'labelprob_requests_total{code="CANCELLED"')
        # A deadline at a quarter of the work expires while the engine is busy with it.
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Classify(params.request(text + " again"), timeout=full_time / 4)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    freed = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            metric(limited, "labelprob_inflight_reads") == 0
            and metric(limited, "labelprob_engine_requests") == 0
        ):
            freed = time.monotonic()
            break
        time.sleep(0.05)
    assert freed is not None, "engine work was not aborted"
    # The handler saw the cancellation (and aborted its engine reads).
    assert metric(limited, 'labelprob_requests_total{code="CANCELLED"') > cancelled_before
    with Client(limited.target, timeout=60) as client:
        assert client.classify("set an alarm", params).top_label in labels


def test_metrics_count_requests_by_method_and_code(limited: ServerProcess) -> None:
    before = metric(limited, 'labelprob_requests_total{code="OK",method="Classify"}')
    with Client(limited.target, timeout=60) as client:
        client.classify("set an alarm", ClassifyParams(LABELS, options=FULL))
    after = metric(limited, 'labelprob_requests_total{code="OK",method="Classify"}')
    assert after == before + 1
    assert metric(limited, "labelprob_prompt_tokens_total") > 0
    assert metric(limited, "labelprob_request_latency_seconds_count") >= 1


def test_logs_are_json_with_request_ids_and_no_texts(limited: ServerProcess) -> None:
    secret = "a very private sentence about alarms"
    with Client(limited.target, timeout=60) as client:
        client.classify(secret, ClassifyParams(LABELS, options=FULL))
    time.sleep(0.5)
    lines = limited.log_path.read_text().splitlines()
    events = [json.loads(x) for x in lines if x.startswith("{")]
    done = [e for e in events if e.get("event") == "request done" and e["method"] == "Classify"]
    assert done and all(len(e["request_id"]) >= 8 and e["code"] for e in done)
    assert secret not in limited.log_path.read_text()


def test_tenants_do_not_share_prefix_cache(limited: ServerProcess) -> None:
    labels = [f"topic_{i}" for i in range(30)]
    params = ClassifyParams(labels, instruction="Tenant isolation check.", options=FULL)

    def cached(tenant: str, text: str) -> int:
        request = params.request(text)
        with Client(limited.target, timeout=60) as client:
            reply = client.stub.Classify(request, metadata=(("x-tenant", tenant),), timeout=60)
        return reply.result.usage.cached_prompt_tokens

    cached("tenant-a", "first text of tenant a")
    # Same tenant, same task: the shared prefix is served from the cache.
    assert cached("tenant-a", "second text of tenant a") >= 64
    # Another tenant with the very same task: its first read finds nothing of tenant a's.
    first_of_b = cached("tenant-b", "first text of tenant b")
    same_of_a = cached("tenant-a", "first text of tenant b")
    assert first_of_b < same_of_a


def test_tenants_do_not_share_online_priors(limited: ServerProcess) -> None:
    """A tenant's texts move its own online prior only: another tenant's first text of the
    same task is calibrated contextually alone."""
    labels = ["weather", "music", "alarm"]

    def probabilities(tenant: str, text: str, calibration: int) -> list[float]:
        ask = pb.ScoringOptions(
            calibration=calibration, method=pb.SCORING_METHOD_DIRECT, prior_scope="tenants"
        )
        request = ClassifyParams(labels, options=ask).request(text)
        with Client(limited.target, timeout=60) as client:
            reply = client.stub.Classify(request, metadata=(("x-tenant", tenant),), timeout=60)
        return [lb.probability for lb in reply.result.labels]

    text = "Will it rain tomorrow?"
    contextual = probabilities("tenant-b", text, pb.CALIBRATION_CONTEXTUAL)
    probabilities("tenant-a", "Play some jazz.", pb.CALIBRATION_ONLINE)
    assert probabilities("tenant-b", text, pb.CALIBRATION_ONLINE) == pytest.approx(contextual)
    # Tenant a has seen a text of the task: its answer for the same text moves.
    moved = probabilities("tenant-a", text, pb.CALIBRATION_ONLINE)
    assert max(abs(a - b) for a, b in zip(moved, contextual, strict=True)) > 1e-3


# -- TLS -----------------------------------------------------------------------------


def test_mutual_tls_requires_a_client_certificate(mtls) -> None:
    server, pki = mtls
    target = f"localhost:{server.port}"
    with Client(target, credentials=mtls_credentials(pki, True), timeout=60) as client:
        result = client.classify("set an alarm", ClassifyParams(LABELS, options=FULL))
        assert result.top_label in LABELS
    with (
        Client(target, credentials=mtls_credentials(pki, False), timeout=10) as client,
        pytest.raises(grpc.RpcError) as err,
    ):
        client.classify("set an alarm", ClassifyParams(LABELS, options=FULL))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with Client(server.target, timeout=10) as plain, pytest.raises(grpc.RpcError):
        plain.classify("set an alarm", ClassifyParams(LABELS, options=FULL))


# -- shutdown and failure (these end their servers: keep them last) -------------------


def test_sigterm_under_load_loses_no_request(limited: ServerProcess) -> None:
    async def load_then_term() -> tuple[list[object], list[int]]:
        async with AsyncClient(limited.target, timeout=120) as client:
            calls = [
                asyncio.ensure_future(client.classify(f"text {i} " * 50, ONE_READ))
                for i in range(5)
            ]
            await asyncio.sleep(0.05)  # the calls are in flight
            assert limited.process is not None
            limited.process.send_signal(signal.SIGTERM)
            statuses = []
            for _ in range(20):
                try:
                    statuses.append(health_status(limited.target))
                except grpc.RpcError:
                    statuses.append(-1)
                if statuses[-1] != health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            return await asyncio.gather(*calls, return_exceptions=True), statuses

    results, statuses = asyncio.run(load_then_term())
    assert all(isinstance(r, pb.Classification) for r in results), results
    assert statuses[-1] != health_pb2.HealthCheckResponse.SERVING
    assert limited.process is not None
    assert limited.process.wait(timeout=60) == 0


def test_engine_death_turns_health_off_and_exits_non_zero(mtls) -> None:
    server, pki = mtls
    credentials = mtls_credentials(pki, True)
    target = f"localhost:{server.port}"
    assert server.process is not None
    engine_processes = [
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)
        if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    ]
    assert engine_processes, "no engine process found"
    started = time.monotonic()
    for p in engine_processes:
        p.kill()
    # RPCs fail fast (no hang), and the process exits non-zero for a restart.
    with Client(target, credentials=credentials, timeout=20, retries=False) as client:
        with pytest.raises(grpc.RpcError) as err:
            for _ in range(50):
                client.classify("set an alarm", ClassifyParams(LABELS, options=FULL))
                time.sleep(0.2)
        assert err.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert server.process.wait(timeout=30) == 3
    assert time.monotonic() - started < 30
