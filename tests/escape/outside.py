"""The outside world of the escape suite: servers on a host address the suite created.

Every server binds the gateway address of a Docker bridge network the suite
creates (a host address no one else uses) and records what reaches it, so
each attack is judged from the host side too.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

from bot_bottle_testkit.egress import TestPKI, _Handler  # pyright: ignore[reportPrivateUsage]


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], record: list[str]) -> None:
        super().__init__(addr, _Handler)
        self.record = record
        self.seen: list[dict[str, Any]] = []

    def get_request(self) -> tuple[Any, Any]:
        conn, peer = super().get_request()
        self.record.append(f"{self.server_address[1]} from {peer[0]}")
        return conn, peer

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, with a
        # bound: done in accept() (the default), one peer that connects and
        # never says hello stops the server accepting anyone, and a peer whose
        # network went away (a removed bottle) hangs shutdown() for good.
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(30)
            request.do_handshake()
        super().finish_request(request, client_address)


@dataclass
class Outside:
    host: str
    pki: TestPKI
    #: every TCP connection any server accepted, and every DNS datagram
    connections: list[str] = field(default_factory=list)
    dns_queries: list[bytes] = field(default_factory=list)
    listener_port: int = 0
    _closers: list[Any] = field(default_factory=list)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """HTTP requests the upstream answered (both ports)."""
        return [r for s in self._closers if isinstance(s, _Upstream) for r in s.seen]

    def start(self) -> Outside:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        for port, wrap in ((443, True), (80, False)):
            srv = _Upstream((self.host, port), self.connections)
            srv.sse_release = threading.Event()  # type: ignore[attr-defined]
            if wrap:
                srv.socket = tls.wrap_socket(
                    srv.socket, server_side=True, do_handshake_on_connect=False
                )
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self._closers.append(srv)
        # A plain TCP listener (attacks that ignore the proxy aim here).
        lst = socket.socket()
        lst.bind((self.host, 0))
        lst.listen()
        self.listener_port = lst.getsockname()[1]
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()
        self._closers.append(lst)
        # A DNS server (UDP and TCP 53) recording every query it receives.
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.host, 53))
        threading.Thread(target=self._dns, args=(udp,), daemon=True).start()
        self._closers.append(udp)
        tcp53 = socket.socket()
        tcp53.bind((self.host, 53))
        tcp53.listen()
        threading.Thread(target=self._accept, args=(tcp53,), daemon=True).start()
        self._closers.append(tcp53)
        return self

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                conn, peer = lst.accept()
            except OSError:
                return
            self.connections.append(f"{lst.getsockname()[1]} from {peer[0]}")
            conn.close()

    def _dns(self, udp: socket.socket) -> None:
        while True:
            try:
                data, _ = udp.recvfrom(4096)
            except OSError:
                return
            self.dns_queries.append(data)

    def stop(self) -> None:
        for c in self._closers:
            with contextlib.suppress(Exception):
                if isinstance(c, _Upstream):
                    c.shutdown()
                    c.server_close()
                else:
                    c.close()


class Capture:
    """Every frame on every interface of the host's network namespace (AF_PACKET,
    root only), kept while the capture runs: "did these bytes leave?" is
    answered from the wire, not from a server that might not be asked."""

    ETH_P_ALL = 0x0003

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self._sock = socket.socket(
            socket.AF_PACKET,  # pyright: ignore[reportAttributeAccessIssue]
            socket.SOCK_RAW,
            socket.htons(self.ETH_P_ALL),
        )
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self._sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def seen(self, needle: bytes) -> bool:
        return any(needle in frame for frame in self.frames)
