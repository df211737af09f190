"""The TCP <-> Unix-socket relay, with real sockets and a real process."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot_bottle_sidecars.egress.testing import free_port


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def _wait(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_tcp_to_unix_to_tcp_round_trip(tmp_path: Path) -> None:
    srv, port = _echo_server()
    sock = tmp_path / "e.sock"
    front = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot_bottle_sidecars.relay", "--wait-targets",
             "--ready-file", str(tmp_path / "a.ready"), f"unix:{sock}=tcp:127.0.0.1:{port}"]
        ),
        subprocess.Popen(
            [sys.executable, "-m", "bot_bottle_sidecars.relay",
             "--ready-file", str(tmp_path / "b.ready"), f"tcp:127.0.0.1:{front}=unix:{sock}"]
        ),
    ]  # fmt: skip
    try:
        _wait(tmp_path / "a.ready")
        _wait(tmp_path / "b.ready")
        payload = b"hello relay " * 20000
        with socket.create_connection(("127.0.0.1", front), timeout=10) as c:
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while data := c.recv(65536):
                got += data
        assert got == payload.upper()
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        srv.close()
    assert all(p.returncode == 0 for p in procs)


def test_bad_endpoint_is_a_usage_error() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bot_bottle_sidecars.relay", "tcp:nope=unix:rel"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2
    assert "is not tcp:HOST:PORT" in r.stderr


def test_a_reset_client_connection_closes_the_target_connection(tmp_path: Path) -> None:
    """An agent that resets its connection must not leave the relay's connection
    to the daemon open (a git daemon waiting for a want line never times out:
    each such connection would hold one of its 32 slots for good)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    ended = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            try:
                while conn.recv(65536):
                    pass  # never answers, like a daemon waiting for more
            except OSError:
                pass
        ended.set()

    threading.Thread(target=serve, daemon=True).start()
    front = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot_bottle_sidecars.relay", "--ready-file",
         str(tmp_path / "r.ready"), f"tcp:127.0.0.1:{front}=tcp:127.0.0.1:{srv.getsockname()[1]}"]
    )  # fmt: skip
    try:
        _wait(tmp_path / "r.ready")
        c = socket.create_connection(("127.0.0.1", front), timeout=10)
        c.sendall(b"0032git-upload-pack /app.git\0host=x\0")
        time.sleep(0.3)
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        assert ended.wait(5), "the relay kept its connection to the target open"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        srv.close()
