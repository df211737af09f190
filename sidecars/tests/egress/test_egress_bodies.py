"""Request bodies the proxy refuses or caps, and per-stream response cuts.

- a body on a route with outbound DLP is capped at MAX_SCANNED_BODY whatever
  its framing (Content-Length, chunked, HTTP/2 without content-length), with
  bounded proxy memory, and never passes unscanned;
- a request refused on its headers is answered before its body is read, and
  the body is dropped, not buffered;
- an inbound DLP block on HTTP/2 resets that stream only.

Own daemon (peak RSS is measured per process). Real mitmproxy, real clients
(httpx, curl, raw sockets, the h2 library), a local upstream on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import select
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import httpx2 as httpx
import pytest
from bot_bottle_sidecars.egress.addon import MAX_SCANNED_BODY
from bot_bottle_testkit.egress import EgressProcess, zstd_module

from bot_bottle.egress.render import RouteSpec

from .conftest import Env

DLP = "dlp.upstream.test"
PLAIN = "noauth.upstream.test"
OVER_CAP = MAX_SCANNED_BODY + (8 << 20)


@pytest.fixture(scope="module")
def daemon(egress_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProcess]:
    path = tmp_path_factory.mktemp("bodies-cfg") / "egress.json"
    up = egress_env.upstream
    routes = [
        RouteSpec(
            DLP,
            ports=(up.https_port, up.http_port),
            outbound_detectors=("boom",),
            inbound_detectors=("inbound-marker",),
        ),
        RouteSpec(PLAIN, ports=(up.https_port, up.http_port)),
    ]
    with egress_env.daemon(path, routes, log_level="blocks") as proc:
        yield proc


@pytest.fixture
def client(daemon: EgressProcess, egress_env: Env) -> Iterator[httpx.Client]:
    with egress_env.client(daemon, timeout=60) as c:
        yield c


def _url(env: Env, host: str, path: str) -> str:
    return env.url(host, path)


def _chunks(total: int, piece: bytes = b"0123456789abcdef" * 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = piece[: total - sent]
        sent += len(chunk)
        yield chunk


def _seen(env: Env, path: str) -> int:
    return sum(1 for r in env.upstream.seen if r["path"].startswith(path))


def _warm(client: httpx.Client, env: Env) -> None:
    # Detectors loaded, TLS contexts made: what is measured next is the body.
    assert client.post(_url(env, DLP, "/warm"), content=b"warm").status_code == 200


# -- 1. the scanned-body cap holds without Content-Length ----------------------------


def test_chunked_upload_past_the_cap_is_refused_with_bounded_memory(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    _warm(client, egress_env)
    daemon.reset_hwm()
    before = daemon.hwm_kib()
    r = client.post(_url(egress_env, DLP, "/chunked-big"), content=_chunks(OVER_CAP))
    assert r.status_code == 413, r.text
    assert r.headers["X-Bot-Bottle-Egress-Rule"] == "body-too-large"
    assert "32 MiB" in r.text and "smaller requests" in r.text
    assert _seen(egress_env, "/chunked-big") == 0
    growth_mib = (daemon.hwm_kib() - before) / 1024
    print(
        f"proxy peak RSS growth for a refused {OVER_CAP >> 20} MiB chunked body: {growth_mib:.1f}"
    )
    # The buffer stops at the cap; buffering the whole body (and copying it
    # for the scan) would be well over twice that.
    assert growth_mib < 56, growth_mib


def test_http2_upload_without_length_past_the_cap_is_refused(
    daemon: EgressProcess, egress_env: Env
) -> None:
    # curl -T - over HTTP/2: DATA frames, no content-length.
    r = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2",
            "--max-time",
            "60",
            "--proxy",
            daemon.proxy_url,
            "--cacert",
            str(egress_env.ca.agent_cert),
            "-T",
            "-",
            "-w",
            "\n%{http_code} %{http_version}",
            _url(egress_env, DLP, "/h2-big"),
        ],
        input=b"y" * OVER_CAP,
        capture_output=True,
        check=False,
    )
    out = r.stdout.decode()
    assert out.endswith("\n413 2"), (out[-500:], r.stderr)
    assert "body-too-large" in out
    assert _seen(egress_env, "/h2-big") == 0


def test_chunked_body_under_the_cap_is_scanned_and_forwarded(
    client: httpx.Client, egress_env: Env
) -> None:
    r = client.post(_url(egress_env, DLP, "/chunked-leak"), content=iter([b"a" * 70000, b"LEAKME"]))
    assert r.status_code == 403 and "dlp-outbound" in r.text
    assert _seen(egress_env, "/chunked-leak") == 0
    r = client.post(_url(egress_env, DLP, "/chunked-ok"), content=_chunks(5 << 20))
    assert r.status_code == 200 and r.json()["body_len"] == 5 << 20


def test_unscanned_route_still_streams_large_chunked_uploads(
    client: httpx.Client, egress_env: Env
) -> None:
    r = client.post(_url(egress_env, PLAIN, "/plain-big"), content=_chunks(OVER_CAP))
    assert r.status_code == 200 and r.json()["body_len"] == OVER_CAP


# -- 2. a refusal on the headers does not wait for (or keep) the body -----------------


def _read_response(sock: socket.socket, timeout: float) -> bytes:
    """Bytes until a complete head plus Content-Length body, or ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(body) >= length:
                return data
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 1073741824",
        "Transfer-Encoding: chunked",
        "Content-Length: 1073741824\r\nExpect: 100-continue",
    ],
    ids=["content-length", "chunked", "expect-100"],
)
def test_refused_upload_is_answered_before_its_body(
    daemon: EgressProcess, egress_env: Env, client: httpx.Client, framing: str
) -> None:
    target = f"unlisted.upstream.test:{egress_env.upstream.http_port}"
    _warm(client, egress_env)
    daemon.reset_hwm()
    before = daemon.hwm_kib()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(
            f"POST http://{target}/upload HTTP/1.1\r\nHost: {target}\r\n{framing}\r\n\r\n".encode()
        )
        # Not one byte of the body sent: the answer must come anyway.
        reply = _read_response(sock, timeout=5)
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
        assert b"host-not-allowed" in reply and b"Connection: close" in reply
        # The body that still comes is read and dropped, not kept.
        piece = (b"4000\r\n" + b"z" * 0x4000 + b"\r\n") if "chunked" in framing else b"z" * 65536
        for _ in range((48 << 20) // len(piece)):
            sock.sendall(piece)
    growth_mib = (daemon.hwm_kib() - before) / 1024
    assert growth_mib < 16, growth_mib
    assert client.get(_url(egress_env, PLAIN, "/after")).status_code == 200


def test_header_dlp_finding_is_answered_before_the_body(
    daemon: EgressProcess, egress_env: Env
) -> None:
    # On a route that buffers bodies for scanning, a secret in a header needs
    # no body to be refused.
    target = f"{DLP}:{egress_env.upstream.http_port}"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(
            f"POST http://{target}/hdr HTTP/1.1\r\nHost: {target}\r\nX-Note: LEAKME\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        reply = _read_response(sock, timeout=5)
    assert reply.startswith(b"HTTP/1.1 403") and b"dlp-outbound" in reply, reply[:300]
    assert b"LEAKME" not in reply
    assert _seen(egress_env, "/hdr") == 0


def test_refused_upload_over_http2_is_answered_before_its_body(
    daemon: EgressProcess, egress_env: Env
) -> None:
    with H2Client.open(daemon, egress_env, "unlisted.upstream.test") as h2c:
        sid = h2c.request("POST", "unlisted.upstream.test", "/upload", end_stream=False)
        h2c.send_data(sid, b"q" * 16384)
        h2c.pump(lambda: h2c.streams[sid].ended, timeout=5)
        st = h2c.streams[sid]
        assert st.status == 403 and b"host-not-allowed" in bytes(st.data)
        # The stream is ours to finish; the proxy drops what still comes.
        h2c.send_data(sid, b"q" * 16384, end_stream=True)
        other = h2c.request("GET", "unlisted.upstream.test", "/again")
        h2c.pump(lambda: h2c.streams[other].ended, timeout=5)
        assert h2c.streams[other].status == 403


# -- 3. an inbound block on HTTP/2 resets one stream, not the connection --------------


@dataclass
class _Stream:
    status: int | None = None
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


@dataclass
class H2Client:
    sock: ssl.SSLSocket
    conn: h2.connection.H2Connection
    port: int
    streams: dict[int, _Stream] = field(default_factory=dict)
    closed: bool = False

    @classmethod
    def open(cls, daemon: EgressProcess, env: Env, host: str) -> H2Client:
        port = env.upstream.https_port
        raw = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        ctx = ssl.create_default_context(cafile=str(env.ca.agent_cert))
        ctx.set_alpn_protocols(["h2"])
        sock = ctx.wrap_socket(raw, server_hostname=host)
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        return cls(sock, conn, port)

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, method: str, host: str, path: str, *, end_stream: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":path", path),
            (":authority", f"{host}:{self.port}"),
            (":scheme", "https"),
        ]
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.sock.sendall(self.conn.data_to_send())
        self.streams[sid] = _Stream()
        return sid

    def send_data(self, sid: int, data: bytes, *, end_stream: bool = False) -> None:
        self.conn.send_data(sid, data, end_stream=end_stream)
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"h2 streams: {self.streams}, closed={self.closed}")
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                return
            for ev in self.conn.receive_data(data):
                self._on(ev)
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)

    def _on(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            for k, v in ev.headers or []:
                if k in (b":status", ":status"):
                    self.streams[ev.stream_id].status = int(v)
        elif isinstance(ev, h2.events.DataReceived):
            assert ev.stream_id is not None and ev.data is not None
            self.streams[ev.stream_id].data += ev.data
            self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            assert ev.stream_id is not None
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            assert ev.stream_id is not None
            self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True


def test_inbound_block_on_http2_resets_only_that_stream(
    daemon: EgressProcess, egress_env: Env
) -> None:
    egress_env.upstream.sse_release.clear()
    with H2Client.open(daemon, egress_env, DLP) as h2c:
        sse = h2c.request("GET", DLP, "/sse")
        h2c.pump(lambda: b"data: first" in h2c.streams[sse].data, timeout=10)
        evil = h2c.request("GET", DLP, "/say?EVIL-INSTRUCTION")
        h2c.pump(lambda: h2c.streams[evil].reset is not None or h2c.closed, timeout=10)
        assert not h2c.closed, "the whole connection was closed"
        assert b"EVIL" not in bytes(h2c.streams[evil].data)
        # The other stream goes on to its end on the same connection.
        egress_env.upstream.sse_release.set()
        h2c.pump(lambda: h2c.streams[sse].ended or h2c.closed, timeout=10)
        assert h2c.streams[sse].ended and b"data: second" in bytes(h2c.streams[sse].data)
        ok = h2c.request("GET", DLP, "/say?harmless")
        h2c.pump(lambda: h2c.streams[ok].ended or h2c.closed, timeout=10)
        assert h2c.streams[ok].status == 200 and bytes(h2c.streams[ok].data) == b"harmless"
    daemon.settle()
    assert any(r.get("rule") == "dlp-inbound" for r in daemon.records())


def test_inbound_block_on_http1_closes_the_connection(
    client: httpx.Client, egress_env: Env
) -> None:
    # HTTP/1 has no other way to say "cut short" once the headers went out.
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(_url(egress_env, DLP, "/say?EVIL-INSTRUCTION"))
    assert client.get(_url(egress_env, DLP, "/say?fine")).text == "fine"


# -- 4. compressed responses on an inbound-DLP route ----------------------------------


def _decode(coding: str, raw: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(raw)
    if coding == "br":
        import brotli

        return brotli.decompress(raw)
    return zstd_module().decompress(raw)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_inbound_dlp_decodes_compressed_responses(
    daemon: EgressProcess, egress_env: Env, coding: str
) -> None:
    with egress_env.client(daemon) as c:
        with c.stream("GET", _url(egress_env, DLP, f"/enc?{coding}&harmless-")) as r:
            raw = b"".join(r.iter_raw())
        assert r.status_code == 200 and r.headers["content-encoding"] == coding
        assert _decode(coding, raw) == b"harmless-" * 1000
        evil = _url(egress_env, DLP, f"/enc?{coding}&EVIL-INSTRUCTION-")
        with pytest.raises(httpx.RemoteProtocolError), c.stream("GET", evil) as r:
            b"".join(r.iter_raw())


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_inbound_decompression_bomb_is_cut_with_bounded_memory(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env, coding: str
) -> None:
    # 256 MiB of zeros in a few hundred bytes (br) or kilobytes (zstd): one
    # chunk on the wire. The decoded stream is scanned piece by piece and cut
    # past the inflate cap, not inflated whole in memory.
    _warm(client, egress_env)
    daemon.reset_hwm()
    before = daemon.hwm_kib()
    bomb = _url(egress_env, DLP, f"/bomb?{coding}&256")
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", bomb) as r:
        b"".join(r.iter_raw())
    growth_mib = (daemon.hwm_kib() - before) / 1024
    print(f"proxy peak RSS growth for a 256 MiB {coding} bomb: {growth_mib:.1f} MiB")
    assert growth_mib < 48, growth_mib
    daemon.settle()
    assert any(
        r.get("rule") == "undecodable-body" and "inflates to more than" in str(r.get("snippet"))
        for r in daemon.records()
    ), daemon.lines[-5:]
    assert client.get(_url(egress_env, DLP, "/say?fine")).text == "fine"
