"""Test and benchmark kit for the egress daemon: a test CA, a local HTTPS
upstream (echo, large downloads, SSE, git smart HTTP via ``git http-backend``)
and a handle on a running daemon process.

The echo answers with the request's headers, the ``Authorization`` value as
:func:`auth_digest` of it (egress cuts a response that carries the credential
it injected); ``/reflect?<form>`` is the reflecting endpoint that hands the
credential back in one form or another (headers, body, base64, gzip, split).

Everything listens on 127.0.0.1 only; route names such as ``api.upstream.test``
reach it through the config's ``extra_hosts`` pins.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import functools
import gzip
import hashlib
import ipaddress
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot_bottle.contracts.backend import EgressControl


def auth_digest(value: str) -> str:
    """How the echo shows an ``Authorization`` value: never the value itself."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _reflection(form: str, value: str) -> tuple[dict[str, str], list[bytes]]:
    """Response headers and body chunks handing ``value`` back in ``form``."""
    raw = value.encode()
    if form == "header":
        return {"X-Echo-Authorization": value}, [b"{}"]
    if form == "body":
        return {}, [json.dumps({"authorization": value}).encode()]
    if form == "base64":
        return {}, [b'{"debug": "' + base64.b64encode(b"auth=" + raw) + b'"}']
    if form == "gzip":
        return {"Content-Encoding": "gzip"}, [gzip.compress(b"request was: " + raw)]
    if form == "split":
        # The token's first half in one chunk, the rest in the next.
        start = raw.find(b" ") + 1
        half = start + (len(raw) - start) // 2
        return {}, [b"seen " + raw[:half], raw[half:] + b" ok"]
    if form == "utf16":
        return {}, [("seen " + value).encode("utf-16")]
    if form == "lower":
        return {}, [b"seen " + raw.lower()]
    return {}, [b"no reflection"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TestPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_pki(
    directory: Path,
    names: Sequence[str],
    *,
    ips: Sequence[str] = (),
    ca_common_name: str = "egress test upstream CA",
    days: int = 30,
) -> TestPKI:
    """A throwaway CA and one server certificate for ``names`` (the upstream's)
    and ``ips`` (IP SANs, for a client that connects by address and checks it)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    sans += [x509.DNSName(n) for n in names]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = TestPKI(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@contextmanager
def serve_tls(
    handler: type[BaseHTTPRequestHandler],
    cert: Path,
    key: Path,
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[ThreadingHTTPServer]:
    """A threading HTTPS server for ``handler`` on ``bind`` (a port of its own
    unless ``port``), serving from a daemon thread until the block ends."""
    server = ThreadingHTTPServer((bind, port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


_BLOCK = bytes(range(256)) * 256  # 64 KiB
#: Bodies of /big, repeated 64 KiB blocks: "bytes" 0..255 (two 26-letter
#: base64-alphabet runs every 256 bytes: many candidates for DLP's decoded
#: views), "random" (what a compressed archive looks like to a scanner) and
#: "text" (source code, as a repository or package download carries).
_BIG_FILLS = {
    "bytes": _BLOCK,
    "random": hashlib.shake_256(b"bot-bottle").digest(64 << 10),
    "text": (Path(__file__).read_bytes() * 64)[: 64 << 10],
}
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final WebSocket frame (clients must mask, servers must not)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read_frame(stream: Any) -> tuple[int | None, bytes]:
    """Read one frame from a file-like ``stream``: (opcode, unmasked payload)."""
    head = stream.read(2)
    if len(head) < 2:
        return None, b""
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(stream.read(2), "big")
    elif n == 127:
        n = int.from_bytes(stream.read(8), "big")
    key = stream.read(4) if head[1] & 0x80 else b""
    data = stream.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return opcode, data


def encode_body(coding: str, data: bytes) -> bytes:
    """``data`` compressed with an HTTP content coding (gzip, br, zstd)."""
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "br":
        import brotli

        return brotli.compress(data, quality=5)  # fast; plenty for tests
    if coding == "zstd":
        return zstd_module().compress(data)
    raise ValueError(f"unknown coding {coding!r}")


@functools.cache
def _bomb(coding: str, mib: int) -> bytes:
    return encode_body(coding, bytes(mib << 20))


def zstd_module() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]  # mitmproxy's dep
    return zstd


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle
    # plus the client's delayed ACK adds ~40 ms to every small response.
    disable_nagle_algorithm = True
    server: _Server  # pyright: ignore[reportIncompatibleVariableOverride]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/wsecho" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket_echo()
        if url.path.startswith("/git/"):
            return self._git(url.path[len("/git") :], url.query)
        body = self._body()
        if url.path == "/big":
            # /big?n=<bytes>[&fill=bytes|random|text]: see _BIG_FILLS.
            q = parse_qs(url.query)
            return self._big(int(q["n"][0]), _BIG_FILLS[q.get("fill", ["bytes"])[0]])
        if url.path == "/sse":
            return self._sse()
        if url.path == "/gz":
            # Compressed whatever the client asked for (Accept-Encoding ignored).
            return self._gzip(url.query.encode())
        if url.path == "/say":
            return self._send(200, url.query.encode(), "text/plain")
        if url.path == "/enc":
            # /enc?<coding>&<text>: text * 1000, compressed with <coding>
            # whatever the client asked for (Accept-Encoding ignored).
            coding, _, text = url.query.partition("&")
            return self._encoded(coding, text.encode())
        if url.path == "/reflect":
            # /reflect?<form>: the request's Authorization handed back (see _reflection).
            return self._reflect(url.query)
        if url.path == "/bomb":
            # /bomb?<coding>&<MiB>: that many MiB of zeros, compressed (a few
            # hundred bytes for br): a decompression bomb.
            coding, _, mib = url.query.partition("&")
            return self._send_encoded(coding, _bomb(coding, int(mib)))
        self.server.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
        )
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = auth_digest(headers["authorization"])
        doc = {
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body_len": len(body),
        }
        self._send(200, json.dumps(doc).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _route

    def _websocket_echo(self) -> None:
        """RFC 6455, just enough: handshake, then echo text frames until close."""
        key = self.headers["Sec-WebSocket-Key"]
        # SHA-1 is what RFC 6455 prescribes for the handshake (not a security use).
        digest = hashlib.sha1((key + _WS_GUID).encode(), usedforsecurity=False).digest()
        accept = base64.b64encode(digest).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            opcode, payload = ws_read_frame(self.rfile)
            if opcode == 0x8 or opcode is None:
                self.wfile.write(ws_frame(0x8, b"", mask=False))
                self.close_connection = True
                return
            self.wfile.write(ws_frame(opcode, payload, mask=False))
            self.wfile.flush()

    def _reflect(self, form: str) -> None:
        extra, chunks = _reflection(form, self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        for data in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(0.3)  # separate chunks on the wire (the agent reads each)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _gzip(self, text: bytes) -> None:
        self._encoded("gzip", text)

    def _encoded(self, coding: str, text: bytes) -> None:
        self._send_encoded(coding, encode_body(coding, text * 1000))

    def _send_encoded(self, coding: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _big(self, n: int, block: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        left = n
        while left > 0:
            chunk = block[: min(left, len(block))]
            self.wfile.write(chunk)
            left -= len(chunk)

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        chunk(b"data: first\n\n")
        # The rest of the stream waits until the test has seen the first event:
        # a proxy that buffers the stream would make the test time out.
        self.server.sse_release.wait(timeout=30)
        chunk(b"data: second\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _git(self, path: str, query: str) -> None:
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.git_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        self.server.seen.append({"method": self.command, "path": self.path, "headers": {}})
        out = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    seen: list[dict[str, Any]]

    def get_request(self) -> tuple[Any, Any]:
        # Counts TCP connections, so a test can prove none was opened.
        type(self).connections += 1
        return super().get_request()

    sse_release: threading.Event
    git_root: Path


@dataclass
class LocalUpstream:
    """HTTPS (and plain HTTP) servers on 127.0.0.1 with the test PKI's certificate."""

    pki: TestPKI
    git_root: Path
    https_port: int = 0
    http_port: int = 0
    sse_release: threading.Event = field(default_factory=threading.Event)
    seen: list[dict[str, Any]] = field(default_factory=list)
    _servers: list[_Server] = field(default_factory=list)

    def start(self) -> LocalUpstream:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        for use_tls in (True, False):
            srv = _Server(("127.0.0.1", 0), _Handler)
            srv.seen = self.seen
            srv.sse_release = self.sse_release
            srv.git_root = self.git_root
            if use_tls:
                srv.socket = tls.wrap_socket(srv.socket, server_side=True)
                self.https_port = srv.server_address[1]
            else:
                self.http_port = srv.server_address[1]
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self._servers.append(srv)
        return self

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (both ports)."""
        return _Server.connections

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()


@dataclass
class EgressProcess:
    """A running ``python -m bot_bottle_sidecars.egress`` and its log lines."""

    proc: subprocess.Popen[str]
    port: int
    config_path: Path
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def wait_for(self, event: str, count: int = 1, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [r for r in self.records() if r.get("event") == event]
            if len(hits) >= count:
                return hits[count - 1]
            if self.proc.poll() is not None:
                raise RuntimeError(f"egress exited {self.proc.returncode}: {self.lines}")
            time.sleep(0.02)
        raise TimeoutError(f"no {event!r} log line within {timeout}s: {self.lines}")

    def count(self, event: str) -> int:
        return sum(1 for r in self.records() if r.get("event") == event)

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def settle(self, timeout: float = 20) -> None:
        """Wait until every line the daemon wrote so far has been read here.

        Log lines reach :attr:`lines` through a reader thread, possibly after
        the client already has its answer. A reload (same file) logs a line
        after everything before it; once that line is read, so are they.
        """
        n = self.count("reloaded")
        self.reload()
        self.wait_for("reloaded", count=n + 1, timeout=timeout)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def hwm_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise RuntimeError("no VmHWM")

    def reset_hwm(self) -> None:
        """Start a fresh peak-RSS measurement (Linux: clear_refs "5" resets VmHWM),
        so a test measures its own peak, not an earlier test's."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)


def start_egress(
    config_path: Path,
    confdir: Path,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> EgressProcess:
    """Start the daemon and wait for its boot line."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_TOKEN_")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot_bottle_sidecars.egress",
            "--config",
            str(config_path),
            "--confdir",
            str(confdir),
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    ep = EgressProcess(proc, port, config_path)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            ep.lines.append(line.rstrip("\n"))

    ep._reader = threading.Thread(target=pump, daemon=True)
    ep._reader.start()
    try:
        ep.wait_for("egress started", timeout=30)
    except BaseException:
        ep.stop()
        raise
    return ep


class LocalEgressControl(EgressControl):
    """The operator's handle (:class:`bot_bottle.contracts.backend.EgressControl`)
    on a daemon this kit started: the same file, the same SIGHUP and the same
    introspection request through the proxy as on a bottle, minus the container."""

    def __init__(self, slug: str, daemon: EgressProcess, introspection_host: str = "_egress.local"):
        self.slug = slug
        self.daemon = daemon
        self.introspection_host = introspection_host

    @property
    def config_path(self) -> Path:
        return self.daemon.config_path

    def signal_reload(self) -> None:
        self.daemon.reload()

    def live_routes(self) -> dict[str, Any]:
        import urllib.request

        proxy = urllib.request.ProxyHandler({"http": self.daemon.proxy_url})
        opener = urllib.request.build_opener(proxy)
        try:
            with opener.open(f"http://{self.introspection_host}/routes", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError as exc:
            from bot_bottle.errors import BotBottleError

            raise BotBottleError(f"cannot read the live egress table: {exc}") from None

    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        out = []
        for record in self.daemon.records():
            if since is not None:
                stamp = calendar.timegm(time.strptime(record.get("ts", ""), "%Y-%m-%dT%H:%M:%SZ"))
                # ts has second resolution: keep the whole second ``since`` falls in.
                if stamp < int(since):
                    continue
            out.append(record)
        return out


def iter_lines_nonblocking(sock: socket.socket, timeout: float) -> Iterator[bytes]:
    """Lines from ``sock`` until ``timeout`` passes without data (raw-socket tests)."""
    buf = b""
    while True:
        ready, _, _ = select.select([sock], [], [], timeout)
        if not ready:
            return
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
