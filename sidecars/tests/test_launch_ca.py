"""The bottle CA a backend generates for egress (bot_bottle_sidecars.launch.ca)."""

from __future__ import annotations

import stat
from pathlib import Path

from bot_bottle_sidecars.launch.ca import generate_bottle_ca
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def test_bottle_ca_has_hash_ski_and_private_key_file(tmp_path: Path) -> None:
    ca = generate_bottle_ca(tmp_path / "ca")
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    raw = ca.key_and_cert.read_bytes()
    key = load_pem_private_key(raw, None)
    assert key.public_key() == cert.public_key()
    assert x509.load_pem_x509_certificates(raw)[0] == cert
    assert stat.S_IMODE(ca.key_and_cert.stat().st_mode) == 0o600
    assert ca.agent_cert.read_bytes() == ca.cert.read_bytes()
    assert b"PRIVATE" not in ca.agent_cert.read_bytes()
