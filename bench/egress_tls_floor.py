"""The floor of egress's TLS work per GiB relayed, without mitmproxy.

mitmproxy terminates TLS with pyOpenSSL over memory BIOs. This does only what
its TLS layers do per byte of a download (``bio_write`` of what the upstream
sent, the ``recv`` loop of one call per TLS record, ``sendall`` to the agent's
session, the ``bio_read`` loop of what is to be sent), with no sockets, no
asyncio and no HTTP, so it is the least CPU a Python proxy built this way can
spend per GiB, whatever else is optimised. The upstream's encryption is
measured on its own and subtracted. Prints CPU seconds per GiB and the
negotiated cipher.

    .venv/bin/python bench/egress_tls_floor.py [--mib 1024] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

CHUNK = 256 << 10  # egress's read size (tuning.READ_SIZE)
BIO_READ = 65535  # what mitmproxy asks for


def _drain(conn: SSL.Connection) -> list[bytes]:
    out: list[bytes] = []
    try:
        while True:
            out.append(conn.bio_read(BIO_READ))
    except SSL.WantReadError:
        return out


def session_pair() -> tuple[SSL.Connection, SSL.Connection]:
    """(server, client) with a completed handshake over memory BIOs."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floor.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    sctx = SSL.Context(SSL.TLS_METHOD)
    sctx.use_certificate(crypto.X509.from_cryptography(cert))
    sctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
    server = SSL.Connection(sctx)
    server.set_accept_state()
    client = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
    client.set_connect_state()
    for _ in range(10):
        for conn in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                conn.do_handshake()
        for src, dst in ((client, server), (server, client)):
            for piece in _drain(src):
                dst.bio_write(piece)
    return server, client


def upstream_only(chunks: int, payload: bytes) -> float:
    server, _ = session_pair()
    t = time.process_time()
    for _ in range(chunks):
        server.sendall(payload)
        _drain(server)
    return time.process_time() - t


def relayed(chunks: int, payload: bytes) -> tuple[float, str]:
    up_server, up_client = session_pair()  # the upstream and egress's session with it
    agent_side, _ = session_pair()  # egress's session with the agent
    t = time.process_time()
    for _ in range(chunks):
        up_server.sendall(payload)
        for piece in _drain(up_server):
            up_client.bio_write(piece)
        plaintext = bytearray()
        try:
            while True:
                plaintext.extend(up_client.recv(65535))
        except SSL.WantReadError:
            pass
        agent_side.sendall(bytes(plaintext))
        _drain(agent_side)
    cipher = f"{up_client.get_protocol_version_name()} {up_client.get_cipher_name()}"
    return time.process_time() - t, cipher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chunks = args.mib * (1 << 20) // CHUNK
    gib = chunks * CHUNK / 2**30
    payload = os.urandom(CHUNK)
    encrypt = upstream_only(chunks, payload)
    total, cipher = relayed(chunks, payload)
    result = {
        "cipher": cipher,
        "proxy_tls_cpu_s_per_gib": (total - encrypt) / gib,
        "one_encryption_cpu_s_per_gib": encrypt / gib,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{cipher}, {args.mib} MiB in {CHUNK >> 10} KiB chunks")
    print(
        f"proxy TLS work (decrypt + re-encrypt, pyOpenSSL memory BIOs): "
        f"{result['proxy_tls_cpu_s_per_gib']:.2f} CPU-s/GiB"
    )
    one = result["one_encryption_cpu_s_per_gib"]
    print(f"one encryption with its BIO copies: {one:.2f} CPU-s/GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
