"""The relay itself; see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_BUF = 64 * 1024
_WAIT_SECONDS = 60.0
#: How long a refused client may take to send the request we answer.
_DOWN_READ_SECONDS = 2.0
_DOWN_MAX_HEAD = 64 * 1024
#: A refusal's log line is repeated (with a count) at most this often.
_LOG_EVERY = 10.0
#: Pending connections a listener queues (the kernel caps it at somaxconn):
#: asyncio's default of 100 made a burst of agent connections fail at the
#: Unix socket (EAGAIN) although every daemon was up.
_BACKLOG = 4096
#: A full queue (EAGAIN) is retried this long before it counts as down;
#: a refusal (nothing listening: the daemon is down) is not retried.
_BUSY_RETRY_SECONDS = 5.0
#: How long a connection over a listener's ``--limit`` waits for a slot.
_QUEUE_SECONDS = 120.0


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "tcp" | "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest.startswith("/"):
            return cls("unix", path=rest)
        if kind == "tcp":
            host, _, port = rest.rpartition(":")
            if host and port.isdigit() and 0 < int(port) < 65536:
                return cls("tcp", host=host.strip("[]"), port=int(port))
        raise ValueError(f"{text!r} is not tcp:HOST:PORT or unix:/PATH")

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.kind == "unix":
            return await asyncio.open_unix_connection(self.path)
        return await asyncio.open_connection(self.host, self.port)

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def _log(event: str, **fields: object) -> None:
    sys.stderr.write(json.dumps({"event": event, "component": "relay", **fields}) + "\n")


class _Throttle:
    """One log line per (event, key) per :data:`_LOG_EVERY` seconds, with the
    number of occurrences folded into it."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def log(self, event: str, key: str, **fields: object) -> None:
        now = time.monotonic()
        last, count = self._seen.get((event, key), (0.0, 0))
        count += 1
        if last and now - last < _LOG_EVERY:
            self._seen[(event, key)] = (last, count)
            return
        self._seen[(event, key)] = (now, 0)
        _log(event, **fields, count=count, per_seconds=_LOG_EVERY)


_throttle = _Throttle()


@dataclass(frozen=True)
class DownAnswer:
    """What a refused client is told: ``http`` (a 503) or ``git`` (an ERR packet)."""

    protocol: str
    daemon: str
    status_file: Path | None = None

    @classmethod
    def parse(cls, text: str, status_file: Path | None) -> tuple[str, DownAnswer]:
        listen, sep, rest = text.partition("=")
        protocol, _, daemon = rest.partition(":")
        if not sep or protocol not in ("http", "git") or not daemon.replace("-", "").isalnum():
            raise ValueError(f"{text!r} is not LISTEN=http:DAEMON or LISTEN=git:DAEMON")
        return str(Endpoint.parse(listen)), cls(protocol, daemon, status_file)

    def message(self) -> str:
        state, crashes = self._state()
        if state == "failed":
            return (
                f"bot-bottle: the {self.daemon} sidecar has stopped after {crashes} crashes "
                "and is not being restarted; the operator sees it in 'bot-bottle list active'"
            )
        return f"bot-bottle: the {self.daemon} sidecar is restarting; retry in a few seconds"

    def _state(self) -> tuple[str, int]:
        if self.status_file is None:
            return "unknown", 0
        try:
            data = json.loads(self.status_file.read_text())
            entry = next(d for d in data["daemons"] if d["name"] == self.daemon)
            return str(entry["state"]), int(entry["crashes"])
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            return "unknown", 0

    def render(self) -> bytes:
        text = self.message()
        if self.protocol == "git":
            payload = f"ERR {text}\n".encode()
            return f"{len(payload) + 4:04x}".encode() + payload
        body = (text + "\n").encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 2\r\n"
            f"X-Bot-Bottle-Sidecar: {self.daemon}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode() + body

    def complete(self, data: bytes) -> bool:
        """Whether ``data`` holds the whole request this answer replies to."""
        if self.protocol == "http":
            return b"\r\n\r\n" in data
        # git://'s first pkt-line (git-upload-pack /repo\0host=...\0).
        if len(data) < 4:
            return False
        try:
            return len(data) >= int(data[:4], 16)
        except ValueError:
            return True


async def _answer_down(
    down: DownAnswer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    # Read the request first: answering before it arrived (and closing with
    # it unread) resets the connection, and the client never sees the answer.
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(_DOWN_READ_SECONDS):
            while not down.complete(data) and len(data) < _DOWN_MAX_HEAD:
                chunk = await reader.read(_BUF)
                if not chunk:
                    break
                data += chunk
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(down.render())
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        # A little of what the client still sends (an upload's body) is
        # drained, so the close does not reset the answer away.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DOWN_READ_SECONDS):
                while await reader.read(_BUF):
                    pass


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter
) -> None:
    """Copy ``reader`` to ``writer``; a clean end is passed on as a half-close.

    A reset or error on either side aborts both connections (``other`` is the
    writer back to ``reader``'s peer): half-closing would leave the peer of a
    vanished client waiting forever (git daemon never times out a client that
    stopped after its first request), one connection slot each.
    """
    try:
        while data := await reader.read(_BUF):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        for w in (writer, other):
            w.transport.abort()


async def _connect(target: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = time.monotonic() + _BUSY_RETRY_SECONDS
    delay = 0.005
    while True:
        try:
            return await target.connect()
        except (ConnectionRefusedError, FileNotFoundError):
            raise  # nothing listens there: the daemon is down
        except OSError:
            # EAGAIN and kin: the target's accept queue is full (a burst):
            # busy, not down.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


async def _handle(
    target: Endpoint,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    down: DownAnswer | None = None,
) -> None:
    try:
        up_reader, up_writer = await _connect(target)
    except OSError as exc:
        error = exc.strerror or str(exc)
        _throttle.log("target_unreachable", f"{target} {error}", target=str(target), error=error)
        if down is not None:
            await _answer_down(down, reader, writer)
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def _wait_for(target: Endpoint) -> bool:
    deadline = time.monotonic() + _WAIT_SECONDS
    while True:
        try:
            _, w = await target.connect()
        except OSError as exc:
            if time.monotonic() > deadline:
                # Serve anyway (refusals get the --down answer): a relay
                # restarted while one daemon is failed must still carry the
                # others. No ready file: the whole path does not work.
                _log("target_not_ready", target=str(target), error=exc.strerror or str(exc))
                return False
            await asyncio.sleep(0.02)
            continue
        w.close()
        return True


async def _serve(
    pairs: list[tuple[Endpoint, Endpoint]],
    ready: Path | None,
    wait: bool,
    downs: dict[str, DownAnswer] | None = None,
    limits: dict[str, int] | None = None,
    no_wait: frozenset[str] = frozenset(),
) -> None:
    servers: list[asyncio.Server] = []
    # In parallel: one target that never comes keeps no other listener waiting.
    # A target started on demand is not probed: the probe would start it.
    waited = [t for listen, t in pairs if str(listen) not in no_wait]
    waits = await asyncio.gather(*(_wait_for(t) for t in waited)) if wait else []
    all_ready = all(waits)
    for listen, target in pairs:
        answer = (downs or {}).get(str(listen))
        cap = (limits or {}).get(str(listen))
        gate = asyncio.Semaphore(cap) if cap else None

        async def handler(
            r: asyncio.StreamReader,
            w: asyncio.StreamWriter,
            target: Endpoint = target,
            down: DownAnswer | None = answer,
            gate: asyncio.Semaphore | None = gate,
        ) -> None:
            if gate is None:
                await _handle(target, r, w, down)
                return
            # Excess connections wait here (clients of git wait patiently)
            # instead of reaching a daemon that would drop or kill them.
            try:
                async with asyncio.timeout(_QUEUE_SECONDS):
                    await gate.acquire()
            except TimeoutError:
                _throttle.log("listener_busy", str(target), target=str(target))
                w.close()
                return
            try:
                await _handle(target, r, w, down)
            finally:
                gate.release()

        if listen.kind == "unix":
            Path(listen.path).unlink(missing_ok=True)
            server = await asyncio.start_unix_server(handler, listen.path, backlog=_BACKLOG)
            Path(listen.path).chmod(0o660)
        else:
            server = await asyncio.start_server(handler, listen.host, listen.port, backlog=_BACKLOG)
        servers.append(server)
        _log("listening", listen=str(listen), target=str(target))
    if ready is not None and all_ready:
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text("ready\n")
        tmp.replace(ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot_bottle_sidecars.relay")
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--wait-targets", action="store_true")
    parser.add_argument(
        "--down",
        action="append",
        default=[],
        metavar="LISTEN=http:DAEMON",
        help="answer a refused connection on LISTEN (503 or git ERR naming DAEMON)",
    )
    parser.add_argument("--status", type=Path, help="init's status file (the daemons' states)")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="LISTEN=N",
        help="at most N connections at once through LISTEN; the rest wait",
    )
    parser.add_argument(
        "--no-wait",
        action="append",
        default=[],
        metavar="LISTEN",
        help="with --wait-targets: do not wait for LISTEN's target (a daemon started on demand)",
    )
    parser.add_argument("pairs", nargs="+", metavar="LISTEN=TARGET")
    args = parser.parse_args(argv)
    pairs: list[tuple[Endpoint, Endpoint]] = []
    downs: dict[str, DownAnswer] = {}
    try:
        for text in args.pairs:
            listen, sep, target = text.partition("=")
            if not sep:
                raise ValueError(f"{text!r} is not LISTEN=TARGET")
            pairs.append((Endpoint.parse(listen), Endpoint.parse(target)))
        for text in args.down:
            listen, answer = DownAnswer.parse(text, args.status)
            if listen not in {str(a) for a, _ in pairs}:
                raise ValueError(f"--down {text!r}: no pair listens on {listen}")
            downs[listen] = answer
        limits: dict[str, int] = {}
        for text in args.limit:
            listen, _, n = text.rpartition("=")
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"--limit {text!r} is not LISTEN=N")
            limits[str(Endpoint.parse(listen))] = int(n)
        no_wait = frozenset(str(Endpoint.parse(text)) for text in args.no_wait)
        if no_wait - {str(a) for a, _ in pairs}:
            raise ValueError(f"--no-wait {sorted(no_wait)}: no pair listens there")
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(pairs, args.ready_file, args.wait_targets, downs, limits, no_wait))
    except OSError as exc:
        _log("failed", error=str(exc))
        return 1
    return 0
