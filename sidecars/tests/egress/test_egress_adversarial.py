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
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
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
    #: Connections accepted (a refused request must not even open one).
    accepted: int = 0

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


# The agent's own credential headers, spelled every way a client can send
# them. Each must be gone upstream, where only the injected one arrives (a
# review of the per-request fast paths: the stripping now pops only names
# found in the request's grouped fields).
_AGENT_AUTH_H1 = {
    "lower": [b"authorization: Bearer agent-own"],
    "upper": [b"AUTHORIZATION: Bearer agent-own"],
    "mixed": [b"AuThOrIzAtIoN: Bearer agent-own"],
    "repeated": [b"Authorization: Bearer agent-own", b"authorization: Bearer agent-own2"],
    "repeated-apart": [
        b"Authorization: Bearer agent-own",
        b"X-Pad: 1",
        b"AUTHORIZATION: Basic agent-own3",
    ],
    "non-utf8-value": [b"Authorization: Bearer agent-own\xff\xfe\xc3"],
    "surrogate-range-value": [b"Authorization: Bearer agent-own\xed\xa0\x80"],
    "empty-then-real": [b"Authorization:", b"authorization: Bearer agent-own"],
    "proxy-auth-mixed": [
        b"pRoXy-AuThOrIzAtIoN: Basic agent-own",
        b"Proxy-Authorization: x agent-own",
    ],
    "proxy-connection": [b"PROXY-CONNECTION: agent-own"],
    "space-before-colon": [b"Authorization : Bearer agent-own"],
    "tab-before-colon": [b"Authorization\t: Bearer agent-own"],
    "obs-fold": [b"Authorization: Bearer", b" agent-own"],
    "folded-into-other": [b"X-Pad: 1", b"\tAuthorization: Bearer agent-own"],
    "all-three": [
        b"proxy-authorization: agent-own",
        b"Authorization: agent-own",
        b"Proxy-Connection: agent-own",
    ],
}


#: Spellings refused outright (mitmproxy's header-name check, egress's
#: control-byte check: an obs-fold leaves a CR LF in the value).
_AGENT_AUTH_H1_REFUSED = {"space-before-colon", "tab-before-colon", "obs-fold", "folded-into-other"}


@pytest.mark.parametrize("case", list(_AGENT_AUTH_H1))
def test_the_agents_credential_headers_never_reach_the_upstream_h1(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    case: str,
) -> None:
    fields = _AGENT_AUTH_H1[case]
    up = upstreams["h1"]
    before = len(up.seen)
    host = "api.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as s:
        s.sendall(
            f"GET /x HTTP/1.1\r\nHost: {host}:{up.port}\r\n".encode()
            + b"".join(f + b"\r\n" for f in fields)
            + b"Connection: close\r\n\r\n"
        )
        reply = s.makefile("rb").read()
    if case in _AGENT_AUTH_H1_REFUSED:
        assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
        assert up.seen[before:] == []
        return
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    (got,) = up.seen[before:]
    assert b"agent-own" not in got.text()
    auth = [v for k, v in got.headers if k == b"authorization"]
    assert auth == [f"Bearer {TOKEN}".encode()]
    assert not [k for k, _ in got.headers if k in (b"proxy-authorization", b"proxy-connection")]


@pytest.mark.parametrize(
    ("te", "upstream_sees"),
    [
        (b"gzip", []),
        (b"gzip, trailers", [b"trailers"]),
        (b"Trailers;q=1, deflate;q=0.5", [b"trailers"]),
        (b"trailers", [b"trailers"]),
    ],
)
def test_the_agent_cannot_ask_the_upstream_for_a_transfer_coding(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    te: bytes,
    upstream_sees: list[bytes],
) -> None:
    """An upstream that honours ``TE: gzip`` answers with a transfer coding the
    scans cannot read, and egress cuts that response on a credentialed route:
    only ``trailers`` (HTTP/2 and gRPC need it) of the agent's ``TE`` goes on."""
    up = upstreams["h1"]
    before = len(up.seen)
    host = "api.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "http/1.1") as s:
        s.sendall(
            f"GET /x HTTP/1.1\r\nHost: {host}:{up.port}\r\n".encode()
            + b"TE: "
            + te
            + b"\r\nConnection: close, TE\r\n\r\n"
        )
        reply = s.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    (got,) = up.seen[before:]
    assert [v for k, v in got.headers if k == b"te"] == upstream_sees


_AGENT_AUTH_H2 = {
    "lower": [(b"authorization", b"Bearer agent-own")],
    "upper": [(b"AUTHORIZATION", b"Bearer agent-own")],
    "mixed": [(b"Authorization", b"Bearer agent-own")],
    "repeated": [(b"authorization", b"Bearer agent-own"), (b"Authorization", b"agent-own2")],
    "non-utf8-value": [(b"authorization", b"Bearer agent-own\xff\x80")],
    "proxy-auth": [(b"Proxy-Authorization", b"Basic agent-own")],
}


@pytest.mark.parametrize("fields", list(_AGENT_AUTH_H2.values()), ids=list(_AGENT_AUTH_H2))
def test_the_agents_credential_headers_never_reach_the_upstream_h2(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    fields: list[tuple[bytes, bytes]],
) -> None:
    """HTTP/2 names must be lower-case; a client may still send others (the
    h2 checks are off here): stripped, or the stream refused."""
    up = upstreams["h2"]
    before = len(up.seen)
    host = "api.upstream.test"
    with _tunnel(rec_egress, egress_env, host, up.port, "h2") as s:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
        )
        conn.initiate_connection()
        conn.send_headers(
            1,
            [(b":method", b"GET"), (b":scheme", b"https"),
             (b":authority", f"{host}:{up.port}".encode()), (b":path", b"/x"), *fields],
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
    for got in up.seen[before:]:
        assert b"agent-own" not in got.text()
        auth = [v for k, v in got.headers if k == b"authorization"]
        assert auth == [f"Bearer {TOKEN}".encode()]
    assert status in (0, 200, 400), status


def _reply_forms(token: bytes) -> dict[str, tuple[list[bytes], bytes]]:
    """Response header lines and body handing ``token`` back, per form: the
    Content-Encoding spellings a server may use, and plain framings."""
    z = gzip.compress(b"seen " + token)
    return {
        "plain-length": ([], b"seen " + token),
        "header-odd-case": ([b"x-EcHo: " + token], b"{}"),
        "gzip-upper": ([b"Content-Encoding: GZIP"], z),
        "gzip-identity": ([b"Content-Encoding: gzip, identity"], z),
        "identity-gzip": ([b"Content-Encoding: identity, gzip"], z),
        "x-gzip": ([b"Content-Encoding: x-gzip"], z),
        "gzip-spaced": ([b"Content-Encoding:   gzip  "], z),
        "gzip-two-fields": ([b"Content-Encoding: identity", b"content-encoding: gzip"], z),
        "gzip-empty-field": ([b"Content-Encoding:", b"Content-Encoding: gzip"], z),
        "gzip-twice": ([b"Content-Encoding: gzip, gzip"], gzip.compress(z)),
        "unknown-coding": ([b"Content-Encoding: x-mine"], b"seen " + token),
        "gzip-but-plain": ([b"Content-Encoding: gzip"], b"seen " + token),
        "large-token-at-end": ([], b"x" * (1 << 20) + b" seen " + token),
        "chunked-split": (
            [b"Transfer-Encoding: chunked"],
            b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b"seen " + token[:7], token[7:]))
            + b"0\r\n\r\n",
        ),
        "te-gzip-chunked": (
            [b"Transfer-Encoding: gzip, chunked"],
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(z), z),
        ),
        "te-gzip-to-eof": ([b"Transfer-Encoding: gzip"], z),
        "chunked-gzip-upper": (
            [b"Transfer-Encoding: chunked", b"Content-Encoding: Gzip"],
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(z), z),
        ),
    }


@dataclass
class ReplyUpstream:
    """HTTP/1.1 over TLS: answers ``GET /<form>`` with the request's
    Authorization handed back in that form (:func:`_reply_forms`)."""

    tls: ssl.SSLContext
    sock: socket.socket = field(default_factory=socket.socket)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> ReplyUpstream:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()
        return self

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
                f = s.makefile("rb")
                target = f.readline().split(b" ")[1]
                auth = b""
                while (line := f.readline()) not in (b"\r\n", b""):
                    name, _, value = line.rstrip(b"\r\n").partition(b":")
                    if name.lower() == b"authorization":
                        auth = value.strip().split(b" ", 1)[-1]
                headers, body = _reply_forms(auth)[target.lstrip(b"/").decode()]
                s.sendall(
                    b"HTTP/1.1 200 OK\r\n"
                    + b"".join(h + b"\r\n" for h in headers)
                    + (
                        b""
                        if b"Transfer-Encoding" in b"".join(headers)
                        else b"Content-Length: %d\r\n" % len(body)
                    )
                    + b"Connection: close\r\n\r\n"
                    + body
                )
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture(scope="module")
def reply_upstream(egress_env: Env) -> Iterator[ReplyUpstream]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(egress_env.pki.server_cert, egress_env.pki.server_key)
    tls.set_alpn_protocols(["http/1.1"])
    up = ReplyUpstream(tls).start()
    yield up
    up.sock.close()


@pytest.fixture(scope="module")
def reply_egress(
    egress_env: Env, reply_upstream: ReplyUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EgressProcess]:
    path = tmp_path_factory.mktemp("reply-cfg") / "egress.json"
    routes = [
        RouteSpec(
            "api.upstream.test",
            ports=(reply_upstream.port,),
            auth_scheme="Bearer",
            token=Secret(TOKEN),
        )
    ]
    _, env = egress_env.write_config(path, routes, log_level="full")
    proc = egress_env.start(path, env)
    yield proc
    proc.stop()


def _get_all_h1(sock: ssl.SSLSocket, host: str, port: int, path: str) -> bytes:
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    got = b""
    try:
        while data := sock.recv(65536):
            got += data
    except (ConnectionResetError, ssl.SSLError):
        pass
    return got


def _get_all_h2(sock: ssl.SSLSocket, host: str, port: int, path: str) -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "https"), (":authority", f"{host}:{port}"),
         (":path", path)],
        end_stream=True,
    )  # fmt: skip
    sock.sendall(conn.data_to_send())
    got = b""
    done = False
    while not done and (data := _recv_or_reset(sock)):
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                got += b"\n".join(k + b": " + v for k, v in _pairs(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                got += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                done = True
        sock.sendall(conn.data_to_send())
    return got


@pytest.mark.parametrize("proto", ["h1", "h2"])
@pytest.mark.parametrize("form", list(_reply_forms(b"")))
def test_a_reflected_credential_in_any_coding_or_framing_never_reaches_the_agent(
    reply_egress: EgressProcess,
    reply_upstream: ReplyUpstream,
    egress_env: Env,
    proto: str,
    form: str,
) -> None:
    """The response's Content-Encoding however spelled (case, repeated
    fields, identity around gzip, spaces), an unknown or lying one, a small
    Content-Length body: the injected credential is found (or the body
    refused as unscannable) before a byte of it goes to the agent, on an
    HTTP/1.1 and an HTTP/2 agent connection alike."""
    host = "api.upstream.test"
    port = reply_upstream.port
    reply_egress.settle()
    cut_before = _cut_for_coding(reply_egress)
    with _tunnel(reply_egress, egress_env, host, port, "h2" if proto == "h2" else "http/1.1") as s:
        got = (_get_all_h2 if proto == "h2" else _get_all_h1)(s, host, port, f"/{form}")
    for view in _decoded_views(got):
        for leaked in (TOKEN, TOKEN[: len(TOKEN) // 2], TOKEN[len(TOKEN) // 2 :]):
            assert leaked.encode() not in view, (form, got[:400])
    if form.startswith("te-"):
        # A transfer coding mitmproxy leaves on the body: cut, and said so.
        reply_egress.settle()
        assert _cut_for_coding(reply_egress) == cut_before + 1


def _cut_for_coding(proc: EgressProcess) -> int:
    return sum("response-transfer-coding" in line for line in proc.lines)


def _decoded_views(got: bytes) -> list[bytes]:
    """``got`` and whatever any gzip member in it (once or twice) inflates to,
    partial members included: what an agent could decode of a cut response."""
    views = [got]
    i = 0
    while (i := got.find(b"\x1f\x8b", i)) >= 0:
        data = got[i:]
        for _ in range(2):
            try:
                data = zlib.decompressobj(47).decompress(data)
            except zlib.error:
                break
            views.append(data)
        i += 2
    return views


def test_the_reply_upstream_does_hand_the_credential_back(reply_upstream: ReplyUpstream) -> None:
    """The forms above do carry the credential (so the test above can fail)."""
    for headers, body in _reply_forms(TOKEN.encode()).values():
        if any(h.startswith(b"Transfer-Encoding:") and h.endswith(b"chunked") for h in headers):
            rest, body = body, b""
            while size := int(rest.split(b"\r\n", 1)[0], 16):
                rest = rest.split(b"\r\n", 1)[1]
                body, rest = body + rest[:size], rest[size + 2 :]
        assert any(TOKEN.encode() in v for v in _decoded_views(b"\n".join(headers) + body))


def _request_bodies() -> dict[str, tuple[list[tuple[str, str]], list[bytes]]]:
    """Request headers and body pieces carrying LEAKME (outbound DLP), per
    case: Content-Encoding spellings, framings, sizes, a split secret."""
    z = gzip.compress(b"key=LEAKME\n")
    big = b"a" * (300 << 10) + b" LEAKME"
    return {
        "small": ([], [b"key=LEAKME"]),
        "split": ([], [b"key=LEA", b"KME tail"]),
        "large": ([], [big[i : i + 65536] for i in range(0, len(big), 65536)]),
        "gzip-upper": ([("Content-Encoding", "GZIP")], [z]),
        "gzip-identity": ([("Content-Encoding", "gzip, identity")], [z]),
        "identity-gzip-two-fields": (
            [("Content-Encoding", "identity"), ("content-encoding", "gzip")],
            [z],
        ),
        "x-gzip-spaced": ([("Content-Encoding", "  x-gzip ")], [z]),
        "gzip-twice": ([("Content-Encoding", "gzip,gzip")], [gzip.compress(z)]),
        "unknown-coding": ([("Content-Encoding", "x-mine")], [b"key=LEAKME"]),
        "gzip-but-plain": ([("Content-Encoding", "gzip")], [b"key=LEAKME"]),
    }


@pytest.mark.parametrize("proto", ["h1-length", "h1-chunked", "h2"])
@pytest.mark.parametrize("case", list(_request_bodies()))
def test_a_refused_request_body_never_reaches_the_upstream(
    rec_egress: EgressProcess,
    upstreams: dict[str, RecordingUpstream],
    egress_env: Env,
    proto: str,
    case: str,
) -> None:
    """A body refused by the outbound scan (found in the ``request`` hook,
    whatever its Content-Encoding spelling, framing or size, the secret
    split across writes) is refused before the upstream sees anything: not
    a connection, not the headers (writes are now sent before each hook)."""
    headers, pieces = _request_bodies()[case]
    up = upstreams["h2" if proto == "h2" else "h1"]
    before, accepted = len(up.seen), up.accepted
    host = "dlp.upstream.test"
    alpn = "h2" if proto == "h2" else "http/1.1"
    with _tunnel(rec_egress, egress_env, host, up.port, alpn) as s:
        if proto == "h2":
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
            conn.increment_flow_control_window(1 << 24)
            conn.send_headers(
                1,
                [(":method", "POST"), (":scheme", "https"),
                 (":authority", f"{host}:{up.port}"), (":path", "/u"), *
                 [(k.lower(), v.strip()) for k, v in headers]],
            )  # fmt: skip
            s.sendall(conn.data_to_send())
            status = 0
            for i, piece in enumerate(pieces):
                window = conn.local_flow_control_window(1)
                while window < len(piece):
                    conn.receive_data(s.recv(65536))
                    s.sendall(conn.data_to_send())
                    window = conn.local_flow_control_window(1)
                for j in range(0, len(piece), 16384):
                    conn.send_data(1, piece[j : j + 16384])
                s.sendall(conn.data_to_send())
                if i == 0 and len(pieces) > 1:
                    time.sleep(0.2)
            conn.end_stream(1)
            s.sendall(conn.data_to_send())
            done = False
            while not done and (data := _recv_or_reset(s)):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(_pairs(ev.headers))[b":status"])
                    if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                        done = True
                s.sendall(conn.data_to_send())
        else:
            head = f"POST /u HTTP/1.1\r\nHost: {host}:{up.port}\r\nConnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers)
            if proto == "h1-length":
                head += f"Content-Length: {sum(map(len, pieces))}\r\n\r\n"
                wire = [p for p in pieces]
            else:
                head += "Transfer-Encoding: chunked\r\n\r\n"
                wire = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
            s.sendall(head.encode())
            for i, piece in enumerate(wire):
                s.sendall(piece)
                if i == 0 and len(wire) > 1:
                    time.sleep(0.2)
            reply = s.makefile("rb").read()
            status = int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    assert status in (400, 403, 413), (case, status)
    assert up.seen[before:] == []
    assert up.accepted == accepted
