"""The per-bottle CA: egress (mitmproxy) signs leaf certificates with it and the agent trusts it.

The subject key identifier is the hash of the public key (RFC 5280 method 1),
the same value mitmproxy writes into each leaf's authority key identifier;
a random SKI makes clients that build chains by AKI/SKI (OpenSSL 3, Go,
rustls) fail to find the issuer, and every TLS connection through egress fails.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: File names mitmproxy reads from its confdir (basename "mitmproxy").
CA_KEY_AND_CERT = "mitmproxy-ca.pem"
CA_CERT = "mitmproxy-ca-cert.pem"
#: The certificate the agent installs (``update-ca-certificates`` wants ``.crt``).
AGENT_CA_CERT = "bot-bottle-ca.crt"


@dataclass(frozen=True)
class BottleCA:
    confdir: Path
    #: Key and certificate, for mitmproxy only (mode 0600).
    key_and_cert: Path
    #: The certificate alone (mitmproxy's copy).
    cert: Path
    #: The certificate the agent trusts (same bytes as ``cert``).
    agent_cert: Path


def generate_bottle_ca(confdir: Path, *, name: str = "bot-bottle", days: int = 3650) -> BottleCA:
    """Create a fresh CA in ``confdir`` (created, mode 0700) and return its files.

    An EC P-256 key: fast to sign leaves with and accepted by every client we
    run. Existing files are replaced.
    """
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} egress CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bot-bottle"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ca = BottleCA(
        confdir=confdir,
        key_and_cert=confdir / CA_KEY_AND_CERT,
        cert=confdir / CA_CERT,
        agent_cert=confdir / AGENT_CA_CERT,
    )
    _write(ca.key_and_cert, key_pem + cert_pem, 0o600)
    # Certificates are public: readable by the sidecar user and the agent's
    # provisioning step whatever uid copies them (a copy into a container
    # keeps the host file's mode, so a 0600 file would stay unreadable there).
    _write(ca.cert, cert_pem, 0o644)
    _write(ca.agent_cert, cert_pem, 0o644)
    return ca


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.chmod(mode)
    tmp.replace(path)
