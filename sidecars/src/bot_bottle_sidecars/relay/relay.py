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


async def _handle(
    target: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await target.connect()
    except OSError as exc:
        _log("target_unreachable", target=str(target), error=exc.strerror or str(exc))
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


async def _wait_for(target: Endpoint) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while True:
        try:
            _, w = await target.connect()
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        w.close()
        return


async def _serve(pairs: list[tuple[Endpoint, Endpoint]], ready: Path | None, wait: bool) -> None:
    servers: list[asyncio.Server] = []
    for listen, target in pairs:
        if wait:
            await _wait_for(target)

        async def handler(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, target: Endpoint = target
        ) -> None:
            await _handle(target, r, w)

        if listen.kind == "unix":
            Path(listen.path).unlink(missing_ok=True)
            server = await asyncio.start_unix_server(handler, listen.path)
            Path(listen.path).chmod(0o660)
        else:
            server = await asyncio.start_server(handler, listen.host, listen.port)
        servers.append(server)
        _log("listening", listen=str(listen), target=str(target))
    if ready is not None:
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
    parser.add_argument("pairs", nargs="+", metavar="LISTEN=TARGET")
    args = parser.parse_args(argv)
    pairs: list[tuple[Endpoint, Endpoint]] = []
    try:
        for text in args.pairs:
            listen, sep, target = text.partition("=")
            if not sep:
                raise ValueError(f"{text!r} is not LISTEN=TARGET")
            pairs.append((Endpoint.parse(listen), Endpoint.parse(target)))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(pairs, args.ready_file, args.wait_targets))
    except OSError as exc:
        _log("failed", error=str(exc))
        return 1
    return 0
