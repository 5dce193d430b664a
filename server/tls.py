"""Server TLS from PEM files that are read again when they change: rotation without a restart.

cert-manager renews certificates in place (a Secret volume swaps its files atomically).
gRPC asks for the current configuration before every TLS handshake; a stat of the files
decides whether to read them again, so an unchanged certificate costs three stat calls.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger(__name__)

Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.client_ca) if p is not None)


def signature(paths: tuple[Path, ...]) -> Signature:
    """Identity of the files' current contents (a replaced file has a new inode or mtime)."""
    stats = [path.stat() for path in paths]
    return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)


def load_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """The files as a gRPC configuration; raises if the key does not match the certificate."""
    # A half-rotated pair (new certificate, old key) must not replace a working one.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(files.cert, files.key)
    return grpc.ssl_server_certificate_configuration(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.client_ca.read_bytes() if files.client_ca else None,
    )


class ReloadingCertificates:
    """The current configuration, and gRPC's per-handshake fetcher that swaps in new files."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._seen = signature(files.paths)
        self.initial = load_configuration(files)
        self._last_problem = ""

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and load; None keeps the current one."""
        try:
            current = signature(self.files.paths)
            if current == self._seen:
                return None
            configuration = load_configuration(self.files)
            if signature(self.files.paths) != current:
                return None  # changed while being read: the next handshake takes it
        except (OSError, ssl.SSLError) as error:
            problem = repr(error)
            if problem != self._last_problem:  # once per problem, not once per handshake
                log.warning(
                    "tls files not loadable, keeping the current certificate", error=problem
                )
                self._last_problem = problem
            return None
        self._seen, self._last_problem = current, ""
        log.info("tls certificate reloaded", cert=str(self.files.cert))
        return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    certificates = ReloadingCertificates(files)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        certificates.fetch,
        require_client_authentication=files.client_ca is not None,
    )
