"""Certificate rotation: a running server serves renewed TLS files on new connections.

cert-manager renews a certificate by replacing the Secret's files in the pod; the server must
pick them up without a restart. The rotation swaps in a certificate from another CA (and a new
client CA), so which certificate a connection sees is unambiguous.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from labelprob.server import tls
from tests.conftest import ServerProcess, tiny_server_args
from tests.test_production import write_pki

pytestmark = pytest.mark.engine

LIVE_NAMES = {"server_cert": "tls.crt", "server_key": "tls.key", "ca": "ca.crt"}


def install(pki: dict[str, Path], live: Path) -> None:
    """Replaces the live files one by one, each by an atomic rename, as a renewal does."""
    for name, target in LIVE_NAMES.items():
        staged = live / f".{target}.new"
        shutil.copyfile(pki[name], staged)
        os.replace(staged, live / target)


def credentials(pki: dict[str, Path]) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki["ca"].read_bytes(),
        private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client_cert"].read_bytes(),
    )


def health_over_new_connection(port: int, pki: dict[str, Path]) -> int:
    """A health check on a fresh connection (no subchannel shared with earlier channels)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(f"localhost:{port}", credentials(pki), options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return int(reply.status)


def served_certificate(port: int, pki: dict[str, Path]) -> bytes:
    """DER of the certificate the server presents on a new TLS connection."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(pki["client_cert"], pki["client_key"])
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(pem_file: Path) -> bytes:
    certificate = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture
def rotation_server(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, dict]]:
    """A mutual-TLS server reading its files from `live`, with two independent PKIs."""
    old, new, live = tmp_path / "old", tmp_path / "new", tmp_path / "live"
    for folder in (old, new, live):
        folder.mkdir()
    pkis = {"old": write_pki(old), "new": write_pki(new), "live": live}
    install(pkis["old"], live)
    files = {"--tls-cert": "tls.crt", "--tls-key": "tls.key", "--tls-client-ca": "ca.crt"}
    flags = [part for flag, name in files.items() for part in (flag, str(live / name))]
    server = ServerProcess(
        "tls-rotation", tiny_server_args(tiny_model_dir, *flags), tmp_path / "server.log"
    )
    server.start()
    try:
        yield server, pkis
    finally:
        server.stop()


def wait_for_tls(server: ServerProcess, pki: dict[str, Path], timeout_s: float = 300) -> None:
    """The gRPC port answers over TLS while the engine still loads (health NOT_SERVING)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.process is not None and server.process.poll() is None, server.log_tail()
        try:
            health_over_new_connection(server.port, pki)
            return
        except grpc.RpcError:
            time.sleep(0.5)
    pytest.fail(f"no TLS answer after {timeout_s}s:\n{server.log_tail()}")


def test_renewed_certificate_is_served_without_a_restart(rotation_server) -> None:
    server, pkis = rotation_server
    old, new = pkis["old"], pkis["new"]
    wait_for_tls(server, old)
    assert server.process is not None
    pid = server.process.pid
    assert served_certificate(server.port, old) == der_of(old["server_cert"])

    install(new, pkis["live"])

    # New connections see the new certificate and trust the new client CA...
    assert served_certificate(server.port, new) == der_of(new["server_cert"])
    assert health_over_new_connection(server.port, new) in {
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    }
    # ...and clients that trust only the old CA are refused: the old certificate is gone.
    with pytest.raises(grpc.RpcError) as refused:
        health_over_new_connection(server.port, old)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.process.poll() is None and server.process.pid == pid
    assert "tls certificate reloaded" in server.log_path.read_text()


def test_a_half_written_pair_keeps_the_working_certificate(tmp_path: Path) -> None:
    """Unit check of the reload guard: a certificate without its key is not swapped in."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    pki_old, pki_new = write_pki(old), write_pki(new)
    files = tls.TlsFiles(pki_old["server_cert"], pki_old["server_key"])
    certificates = tls.ReloadingCertificates(files)
    assert certificates.fetch() is None  # unchanged
    shutil.copyfile(pki_new["server_cert"], pki_old["server_cert"])  # the key is still old
    assert certificates.fetch() is None
    shutil.copyfile(pki_new["server_key"], pki_old["server_key"])
    assert certificates.fetch() is not None  # the complete new pair
    assert certificates.fetch() is None
