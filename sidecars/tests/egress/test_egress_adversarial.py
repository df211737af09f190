"""Adversarial requests against the egress daemon, seen from the upstream's side.

Recording upstreams on 127.0.0.1 (TLS with the test PKI; HTTP/1.1 or HTTP/2)
keep what each request arrived with, so a test can prove what did or did not
leave the proxy: headers, trailers.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess

from bot_bottle.egress.render import RouteSpec
from bot_bottle.secrets import Secret

from .conftest import Env

TOKEN = "tok-rec-5e1d9c0b7a33"


@dataclass
class Recorded:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def text(self) -> bytes:
        fields = [*self.headers, *self.trailers]
        return b"\n".join(k + b": " + v for k, v in fields) + b"\n" + self.body


@dataclass
class RecordingUpstream:
    """Answers every request 200 and records it. ``h2``: HTTP/2 only (ALPN),
    else HTTP/1.1 (Content-Length or chunked, trailers read and kept)."""

    tls: ssl.SSLContext
    h2: bool
    sock: socket.socket = field(default_factory=socket.socket)
    seen: list[Recorded] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> RecordingUpstream:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def stop(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with self.tls.wrap_socket(conn, server_side=True) as s:
                s.settimeout(10)
                (self._h2 if self.h2 else self._h1)(s)
        except (OSError, ValueError):
            pass

    def _h1(self, s: ssl.SSLSocket) -> None:
        f = s.makefile("rb")
        rec = Recorded(headers=[(b":request-line", f.readline().rstrip(b"\r\n"))])
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.rstrip(b"\r\n").partition(b":")
            rec.headers.append((name.lower(), value.strip()))
        fields = dict(rec.headers)
        if fields.get(b"transfer-encoding", b"").replace(b" ", b"").endswith(b"chunked"):
            while size := int(f.readline().split(b";")[0], 16):
                rec.body += f.read(size)
                f.readline()
            while (line := f.readline()) not in (b"\r\n", b""):
                name, _, value = line.rstrip(b"\r\n").partition(b":")
                rec.trailers.append((name.lower(), value.strip()))
        else:
            rec.body = f.read(int(fields.get(b"content-length", b"0")))
        self.seen.append(rec)
        answer = b"ok"
        if rec.headers[0][1].startswith(b"TRACE "):
            # RFC 9110 TRACE: the request as received, headers included.
            answer = rec.text()
        s.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(answer), answer)
        )

    def _h2(self, s: ssl.SSLSocket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        streams: dict[int, Recorded] = {}
        while data := s.recv(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = Recorded(headers=_pairs(ev.headers))
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id].body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    streams[ev.stream_id].trailers = _pairs(ev.headers)
                if isinstance(ev, h2.events.StreamEnded):
                    self.seen.append(streams.pop(ev.stream_id))
                    conn.send_headers(ev.stream_id, [(":status", "200")])
                    conn.send_data(ev.stream_id, b"ok", end_stream=True)
            s.sendall(conn.data_to_send())


def _pairs(headers: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for k, v in headers:
        kb = k if isinstance(k, bytes) else k.encode()
        vb = v if isinstance(v, bytes) else v.encode()
        out.append((kb.lower(), vb))
    return out


def _upstream(env: Env, *, h2_only: bool) -> RecordingUpstream:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(env.pki.server_cert, env.pki.server_key)
    tls.set_alpn_protocols(["h2"] if h2_only else ["http/1.1"])
    return RecordingUpstream(tls, h2_only).start()


@pytest.fixture(scope="module")
def upstreams(egress_env: Env) -> Iterator[dict[str, RecordingUpstream]]:
    ups = {"h1": _upstream(egress_env, h2_only=False), "h2": _upstream(egress_env, h2_only=True)}
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture(scope="module")
def rec_egress(
    egress_env: Env,
    upstreams: dict[str, RecordingUpstream],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EgressProcess]:
    path = tmp_path_factory.mktemp("rec-cfg") / "egress.json"
    ports = tuple(up.port for up in upstreams.values())
    routes = [
        RouteSpec("api.upstream.test", ports=ports, auth_scheme="Bearer", token=Secret(TOKEN)),
        RouteSpec("dlp.upstream.test", ports=ports, outbound_detectors=("boom",)),
        # Default ports (443, 80) and a credential: like a provider's API route.
        RouteSpec("git.upstream.test", auth_scheme="Bearer", token=Secret(TOKEN)),
    ]
    _, env = egress_env.write_config(path, routes, log_level="full")
    proc = egress_env.start(path, env)
    yield proc
    proc.stop()


def _tunnel(proxy: EgressProcess, env: Env, host: str, port: int, alpn: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=str(env.ca.agent_cert))
    ctx.set_alpn_protocols([alpn])
    return ctx.wrap_socket(raw, server_hostname=host)


def _post_h1(sock: ssl.SSLSocket, host: str, port: int, trailer: tuple[str, str]) -> int:
    sock.sendall(
        f"POST /upload HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        f"Trailer: {trailer[0]}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n"
        f"{trailer[0]}: {trailer[1]}\r\n\r\n".encode()
    )
    sock.settimeout(3)
    try:
        reply = sock.makefile("rb").readline()
    except TimeoutError:
        return 0
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def _post_h2(sock: ssl.SSLSocket, host: str, port: int, trailer: tuple[str, str]) -> int:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "https"), (":authority", f"{host}:{port}"),
               (":path", "/upload")]  # fmt: skip
    conn.send_headers(1, headers)
    conn.send_data(1, b"hello")
    conn.send_headers(1, [(trailer[0].lower(), trailer[1])], end_stream=True)
    sock.sendall(conn.data_to_send())
    status = 0
    while data := sock.recv(65536):
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(_pairs(ev.headers))[b":status"])
            if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                return status
        sock.sendall(conn.data_to_send())
    return status


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize(
    ("host", "trailer"),
    [
        ("api.upstream.test", ("Authorization", "Bearer agent-own")),
        ("dlp.upstream.test", ("X-Extra", "LEAKME")),
    ],
    ids=["authorization-in-trailer", "dlp-finding-in-trailer"],
)
def test_request_trailers_never_reach_the_upstream(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    proto: str,
    host: str,
    trailer: tuple[str, str],
) -> None:
    """Trailers are headers that come after the body: they would pass by the
    Authorization stripping and the outbound DLP scan of the headers. The
    proxy drops them. (mitmproxy 12 cannot read HTTP/1 trailers at all: such
    a request dies with its connection; this holds if a later version can.)"""
    up = upstreams[proto]
    before = len(up.seen)
    alpn = "h2" if proto == "h2" else "http/1.1"
    with _tunnel(rec_egress, egress_env, host, up.port, alpn) as sock:
        status = (_post_h2 if proto == "h2" else _post_h1)(sock, host, up.port, trailer)
    assert not [r for r in up.seen[before:] if trailer[1].encode() in r.text()]
    if proto == "h2":
        assert status == 200
        (got,) = up.seen[before:]
        assert (got.body, got.trailers) == (b"hello", [])


@pytest.mark.parametrize("how", ["absolute-form", "plain-in-tunnel"])
def test_a_credential_route_on_default_ports_is_never_served_in_clear_text(
    rec_egress: EgressProcess, how: str
) -> None:
    """``http://api.example.com/`` would get the operator's token injected and
    sent unencrypted to port 80 (or to 443 as plain HTTP inside a tunnel):
    refused before any connection is made."""
    host = "git.upstream.test"
    with socket.create_connection(("127.0.0.1", rec_egress.port), timeout=10) as sock:
        if how == "plain-in-tunnel":
            sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            target = "/x"
            authority = f"{host}:443"
        else:
            target = f"http://{host}/x"
            authority = host
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode()
        )
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
    assert b"rule: credential-needs-tls" in reply
    assert TOKEN.encode() not in reply


@pytest.mark.parametrize("target", ["/upload#LEAKME", "/upload?a=1#LEAKME", "/up#x?LEAKME"])
def test_a_dlp_finding_after_a_hash_in_the_request_target_is_refused(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    target: str,
) -> None:
    """A request target carries no fragment, but a client can send a '#' and
    mitmproxy forwards it as is, while the URL scan (urlsplit) treated what
    follows it as a fragment and never looked at it. Such a target is refused.
    (Targets not starting with '/' are refused by mitmproxy itself.)"""
    up = upstreams["h1"]
    before = len(up.seen)
    host = "dlp.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{up.port}\r\nConnection: close\r\n\r\n".encode()
        )
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 403"), reply[:300]
    assert b"rule: bad-request-target" in reply
    assert b"LEAKME" not in reply
    rec_egress.settle()
    assert not [line for line in rec_egress.lines if "LEAKME" in line]
    assert not [r for r in up.seen[before:] if b"LEAKME" in r.text()]


def test_a_dlp_finding_in_the_request_method_is_refused(
    rec_egress: EgressProcess, upstreams: dict[str, RecordingUpstream], egress_env: Env
) -> None:
    """Any token is a method to HTTP/1.1, and mitmproxy forwards it: the method
    goes through the outbound scan like the rest of the request line."""
    up = upstreams["h1"]
    before = len(up.seen)
    host = "dlp.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as sock:
        head = f"Host: {host}:{up.port}\r\nConnection: close\r\n\r\n"
        sock.sendall(f"XLEAKME /upload HTTP/1.1\r\n{head}".encode())
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 403"), reply[:300]
    assert b"rule: dlp-outbound" in reply
    assert not [r for r in up.seen[before:] if b"LEAKME" in r.text()]
    rec_egress.settle()
    assert not [line for line in rec_egress.lines if "LEAKME" in line]


def test_a_transfer_coding_other_than_chunked_is_refused(
    rec_egress: EgressProcess, upstreams: dict[str, RecordingUpstream], egress_env: Env
) -> None:
    """``Transfer-Encoding: gzip, chunked``: mitmproxy undoes only the chunking,
    so the outbound scan sees gzip bytes while an upstream that undoes the
    transfer coding reads the plain text. Refused before anything leaves."""
    up = upstreams["h1"]
    before = len(up.seen)
    host = "dlp.upstream.test"
    body = gzip.compress(b"key=LEAKME\n")
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as sock:
        head = (
            f"POST /u HTTP/1.1\r\nHost: {host}:{up.port}\r\n"
            "Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 403"), reply[:300]
    assert b"rule: transfer-coding" in reply
    assert up.seen[before:] == []


def test_trace_cannot_reflect_the_injected_credential(
    rec_egress: EgressProcess, upstreams: dict[str, RecordingUpstream], egress_env: Env
) -> None:
    """TRACE echoes the request as the upstream received it: with the route's
    credential injected, that would hand the agent the real token."""
    up = upstreams["h1"]
    before = len(up.seen)
    host = "api.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as sock:
        head = f"Host: {host}:{up.port}\r\nConnection: close\r\n\r\n"
        sock.sendall(f"TRACE / HTTP/1.1\r\n{head}".encode())
        reply = sock.makefile("rb").read()
    assert TOKEN.encode() not in reply
    assert reply.startswith(b"HTTP/1.1 403"), reply[:300]
    assert b"rule: method-not-allowed" in reply
    assert up.seen[before:] == []


def test_an_unpinned_name_resolving_to_loopback_is_never_connected_to(
    egress_env: Env, tmp_path: Path
) -> None:
    """An allowed name whose DNS answer is loopback (or link-local: the cloud
    metadata service) is refused before connecting: whoever controls that
    name's DNS must not be able to aim egress at the bundle's own daemons or
    the host. Here "localhost", from /etc/hosts, stands in for such an answer;
    the same address pinned in extra_hosts is the operator's choice and works."""
    up = egress_env.upstream
    path = tmp_path / "egress.json"
    routes = [RouteSpec("localhost", ports=(up.http_port,))]
    _, env = egress_env.write_config(path, routes, extra_hosts={})
    proc = egress_env.start(path, env)
    try:
        before = up.connections
        with httpx.Client(proxy=proc.proxy_url, trust_env=False, timeout=20) as c:
            r = c.get(f"http://localhost:{up.http_port}/echo")
        assert r.status_code >= 500, r.text
        assert "loopback" in r.text
        assert up.connections == before
    finally:
        proc.stop()
    pinned = tmp_path / "pinned.json"
    _, env = egress_env.write_config(pinned, routes, extra_hosts={"localhost": "127.0.0.1"})
    proc = egress_env.start(pinned, env)
    try:
        with httpx.Client(proxy=proc.proxy_url, trust_env=False, timeout=20) as c:
            assert c.get(f"http://localhost:{up.http_port}/echo").status_code == 200
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("proto", "header"),
    [
        ("h1", b"X-Note: a\x00b"),
        ("h1", b"X-Note: a\x01b"),
        ("h1", b"X-Note: a\x1b[31mb"),
        ("h1", b"X-Note: a\x7fb"),
        ("h2", b"x-note: a\x00b"),
    ],
    ids=["nul", "soh", "esc", "del", "h2-nul"],
)
def test_a_control_byte_in_a_request_header_is_refused(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    proto: str,
    header: bytes,
) -> None:
    """A NUL (or other control byte) in a header value was forwarded: an
    upstream that splits on it reads other headers than the proxy judged.
    Refused with a 400 that says why; nothing reaches the upstream."""
    up = upstreams[proto]
    before = len(up.seen)
    host = "api.upstream.test"
    name, _, value = header.partition(b": ")
    with _tunnel(rec_egress, egress_env, host, up.port, "h2" if proto == "h2" else "http/1.1") as s:
        if proto == "h1":
            s.sendall(
                f"GET /x HTTP/1.1\r\nHost: {host}:{up.port}\r\n".encode()
                + header
                + b"\r\nConnection: close\r\n\r\n"
            )
            reply = s.makefile("rb").read()
            status = int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else 0
            assert b"rule: header-control-byte" in reply, reply[:400]
            assert b"'X-Note'" in reply and b"in its value" in reply, reply[:400]
        else:
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
            )
            conn.initiate_connection()
            conn.send_headers(
                1,
                [(b":method", b"GET"), (b":scheme", b"https"),
                 (b":authority", f"{host}:{up.port}".encode()), (b":path", b"/x"),
                 (name, value)],
                end_stream=True,
            )  # fmt: skip
            s.sendall(conn.data_to_send())
            status = 0
            done = False
            while not done and (data := _recv_or_reset(s)):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(_pairs(ev.headers))[b":status"])
                    if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                        done = True
                s.sendall(conn.data_to_send())
            # h2 may reset the stream itself (a protocol error): either way not forwarded.
            assert status in (0, 400), status
    if proto == "h1":
        assert status == 400
    assert up.seen[before:] == []


def _recv_or_reset(sock: ssl.SSLSocket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:  # h2 closes the connection on a malformed header
        return b""
