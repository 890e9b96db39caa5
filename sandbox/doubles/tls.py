"""A throwaway local certificate authority for the HTTPS doubles.

azure-identity only talks to an https authority and the Cosmos SDK refuses AAD
tokens over plain HTTP, so the doubles serve TLS. Clients trust the sandbox CA
through a bundle (system CAs + this CA) passed as REQUESTS_CA_BUNDLE, rather
than turning verification off.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class LocalCA:
    cert_file: Path  # PEM of the CA certificate
    server_cert_file: Path  # PEM chain for 127.0.0.1 / localhost
    server_key_file: Path
    bundle_file: Path  # certifi's roots + the CA: point REQUESTS_CA_BUNDLE here

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert_file, self.server_key_file)
        return ctx


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_local_ca(directory: Path) -> LocalCA:
    """Create (or reuse) a CA and a server certificate for 127.0.0.1 in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = LocalCA(
        cert_file=directory / "ca.pem",
        server_cert_file=directory / "server.pem",
        server_key_file=directory / "server-key.pem",
        bundle_file=directory / "ca-bundle.pem",
    )
    if all(p.exists() for p in (ca.cert_file, ca.server_cert_file, ca.server_key_file, ca.bundle_file)):
        return ca

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("cosmos-s3-export sandbox CA"))
        .issuer_name(_name("cosmos-s3-export sandbox CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca.cert_file.write_bytes(ca_cert.public_bytes(pem))
    ca.server_cert_file.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    ca.server_key_file.write_bytes(
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca.bundle_file.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca_cert.public_bytes(pem))
    return ca
