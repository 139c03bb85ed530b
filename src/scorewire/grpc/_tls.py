"""TLS for the gRPC port (and ``/metrics``): certificates checked at start and read
again from disk when they change.

``--tls-cert`` / ``--tls-key`` (PEM) serve TLS; ``--tls-client-ca`` also requires a
client certificate signed by that CA (mutual TLS). At start every file is checked —
readable, PEM, the key matches the certificate, the certificate is valid now, the
client CA is a CA — and a problem is one line naming the file (``TlsError``).

Short-lived certificates (cert-manager, SPIFFE) are rewritten on disk every hour or
so: gRPC asks :class:`CertificateFiles` for the configuration at every new TLS
handshake, and it reads the files again when their modification time, size or inode
changed (a rename over the old file included). A new set that fails the checks is
logged and the previous one stays in use; connections already open keep theirs.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from ..errors import ConfigurationError

log = logging.getLogger("scorewire.tls")


class TlsError(ConfigurationError):
    """A TLS file that cannot be used: names the file and the problem."""


@dataclass(frozen=True)
class CertificateSet:
    """One checked reading of the files."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    not_after: datetime.datetime


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TlsError(f"{path}: no such file ({what})") from None
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if not data.strip():
        raise TlsError(f"{path}: the {what} file is empty")
    return data


def check_files(cert_path: Path, key_path: Path, client_ca_path: Path | None) -> CertificateSet:
    """Read and check the files (see the module docstring); TlsError on a problem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "private key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(f"{cert_path}: not a PEM certificate") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(f"{key_path}: the private key is encrypted (give it unencrypted, readable by this user only)") from None
    except ValueError:
        raise TlsError(f"{key_path}: not a PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise TlsError(f"{key_path}: the private key does not match the certificate {cert_path}")
    now = datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc <= now:
        raise TlsError(f"{cert_path}: the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise TlsError(f"{cert_path}: the certificate is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    client_ca = None
    if client_ca_path is not None:
        client_ca = _read(client_ca_path, "client CA")
        try:
            cas = x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise TlsError(f"{client_ca_path}: not a PEM certificate") from None
        for ca in cas:
            try:
                constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                constraints = None
            if constraints is None or not constraints.ca:
                raise TlsError(f"{client_ca_path}: {ca.subject.rfc4514_string()[:80]} is not a CA certificate")
    return CertificateSet(cert_pem, key_pem, client_ca, leaf.not_valid_after_utc)


class CertificateFiles:
    """The TLS files of one server, read again when they change (gRPC's
    certificate-configuration fetcher)."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.paths = (cert, key, client_ca)
        self.current = check_files(cert, key, client_ca)  # at start: a problem stops the server
        self._stamp = self._stat()
        self._lock = threading.Lock()
        #: how many times the files were read again and put in use (for tests and logs)
        self.reloads = 0

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        out = []
        for p in self.paths:
            try:
                st = os.stat(p) if p is not None else None
            except OSError:
                st = None
            out.append(None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def configuration(self, certs: CertificateSet) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(certs.key, certs.cert)], root_certificates=certs.client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher, called at each new handshake: a new configuration when the
        files changed and pass the checks, else None (keep the current one)."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        with self._lock:
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                certs = check_files(*self.paths)
            except TlsError as exc:
                log.error("%s; the previous certificate stays in use", exc.message)
                return None
            self.current = certs
            self.reloads += 1
        log.info("TLS certificate read again from %s (valid until %s UTC)", self.paths[0], f"{certs.not_after:%Y-%m-%d %H:%M}")
        return self.configuration(certs)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(self.current),
            self.fetch,
            require_client_authentication=self.paths[2] is not None,
        )
