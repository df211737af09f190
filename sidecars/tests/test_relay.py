"""The TCP <-> Unix-socket relay, with real sockets and a real process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from bot_bottle_testkit.egress import free_port


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


def _refusing_relay(
    tmp_path: Path, status: Path | None = None
) -> tuple[subprocess.Popen[bytes], int, int]:
    """A relay whose two targets refuse (nothing listens): an HTTP and a git endpoint."""
    dead_http, dead_git = free_port(), free_port()
    http_front, git_front = free_port(), free_port()
    argv = [sys.executable, "-m", "bot_bottle_sidecars.relay", "--ready-file",
            str(tmp_path / "r.ready"),
            "--down", f"tcp:127.0.0.1:{http_front}=http:egress",
            "--down", f"tcp:127.0.0.1:{git_front}=git:git-gate",
            f"tcp:127.0.0.1:{http_front}=tcp:127.0.0.1:{dead_http}",
            f"tcp:127.0.0.1:{git_front}=tcp:127.0.0.1:{dead_git}"]  # fmt: skip
    if status is not None:
        argv[3:3] = ["--status", str(status)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    _wait(tmp_path / "r.ready")
    return proc, http_front, git_front


def _ask(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(request)
        got = b""
        while data := c.recv(65536):
            got += data
    return got


def test_a_refused_target_is_answered_503_or_git_err_and_logged_once(tmp_path: Path) -> None:
    proc, http_front, git_front = _refusing_relay(tmp_path)
    try:
        for _ in range(20):
            answer = _ask(http_front, b"CONNECT api.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert b"X-Bot-Bottle-Sidecar: egress" in head
            assert body == b"bot-bottle: the egress sidecar is restarting; retry in a few seconds\n"
        got = _ask(git_front, b"0032git-upload-pack /app.git\0host=x\0")
        assert (
            got[4:]
            == b"ERR bot-bottle: the git-gate sidecar is restarting; retry in a few seconds\n"
        )
        assert int(got[:4], 16) == len(got)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    refused = [json.loads(x) for x in err.decode().splitlines() if "target_unreachable" in x]
    # 21 refusals, two targets: one line each (within the 10 s window), not one per connection.
    assert len(refused) == 2
    assert sorted(r["count"] for r in refused) == [1, 1]


def test_a_failed_daemon_is_named_as_stopped_in_the_answer(tmp_path: Path) -> None:
    status = tmp_path / "init-status.json"
    status.write_text(
        json.dumps({"daemons": [{"name": "egress", "state": "failed", "crashes": 10}]})
    )
    proc, http_front, _ = _refusing_relay(tmp_path, status)
    try:
        answer = _ask(http_front, b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"egress sidecar has stopped after 10 crashes" in answer


def test_a_limit_makes_excess_connections_wait_for_a_slot(tmp_path: Path) -> None:
    srv, port = _echo_server()
    front = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot_bottle_sidecars.relay", "--ready-file",
         str(tmp_path / "r.ready"), f"--limit=tcp:127.0.0.1:{front}=1",
         f"tcp:127.0.0.1:{front}=tcp:127.0.0.1:{port}"]
    )  # fmt: skip
    try:
        _wait(tmp_path / "r.ready")
        first = socket.create_connection(("127.0.0.1", front), timeout=10)
        first.sendall(b"one")
        assert first.recv(100) == b"ONE"
        second = socket.create_connection(("127.0.0.1", front), timeout=10)
        second.sendall(b"two")
        second.settimeout(0.5)
        with pytest.raises(TimeoutError):
            second.recv(100)  # waiting: the one slot is taken
        first.close()
        second.settimeout(10)
        assert second.recv(100) == b"TWO"
        second.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        srv.close()
