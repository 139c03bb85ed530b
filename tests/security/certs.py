"""Certificates made by the tests (never committed): a CA, server and client
certificates signed by it, and the broken ones the configuration checks refuse."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issued:
    cert: Path
    key: Path

    def pem(self) -> bytes:
        return self.cert.read_bytes()


class Authority:
    """A test CA that writes what it issues into ``folder``."""

    def __init__(self, folder: Path, name: str = "scorewire test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = _key()
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip
        self.cert = folder / f"{name.replace(' ', '-')}.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        cn: str,
        sans: list[x509.GeneralName] | None = None,
        not_before: datetime.datetime = NOW - DAY,
        not_after: datetime.datetime = NOW + 30 * DAY,
        ca: bool = False,
    ) -> Issued:
        key = _key()
        builder = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        out = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        out.key.chmod(0o600)
        return out

    def server(self, stem: str = "server", cn: str = "scorewire") -> Issued:
        """A server certificate for 127.0.0.1 and localhost."""
        return self.issue(stem, cn, [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])

    def client(self, stem: str, uri: str) -> Issued:
        """A client certificate with ``uri`` (e.g. a SPIFFE id) as its SAN."""
        return self.issue(stem, stem, [x509.UniformResourceIdentifier(uri)])


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number
