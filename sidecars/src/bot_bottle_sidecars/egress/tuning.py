"""Bulk-transfer tuning of mitmproxy's connection I/O.

mitmproxy (12.x) reads every connection with ``reader.read(65535)`` from an
``asyncio.StreamReader`` whose default limit pauses the socket once 128 KiB
are buffered. Each read becomes one event that runs the whole layer stack
(TCP, TLS, HTTP, the stream, then the commands back down to the other leg),
so a streamed download costs one Python round trip per 64 KiB. Reading up to
:data:`READ_SIZE` at a time (asyncio's own ``recv`` size) cuts the proxy's
CPU per GiB by about a third (sidecars/README.md, "Throughput").

Memory stays bounded: a connection's reader buffers at most
``2 * READ_SIZE`` before asyncio pauses the socket (plus one ``recv`` of 256
KiB), i.e. 768 KiB instead of 384 KiB. Nothing else changes: the bytes read
go through the same layers, hooks and checks as before.

:func:`install` wraps ``ConnectionHandler.handle_connection`` after checking
that its source still reads as expected; a mitmproxy version that reads
differently makes the daemon refuse to start (as ``streams.install`` does),
so an upgrade is looked at rather than silently running untuned or wrong.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

#: Bytes asked for per read of a connection (asyncio's ``recv`` size).
READ_SIZE = 256 << 10
#: The read size mitmproxy asks for; only reads of exactly this size are widened.
MITM_READ = 65535
#: Lines ``handle_connection`` must contain for the wrapper to be correct.
_EXPECTED_SOURCE = (
    "reader = self.transports[connection].reader",
    f"data = await reader.read({MITM_READ})",
)
_MARK = "_bot_bottle_tuned"


class WideStreamReader(asyncio.StreamReader):
    """A connection's reader that answers mitmproxy's 64 KiB reads with up to
    :data:`READ_SIZE` bytes (what is already buffered; it never waits for more)."""

    async def read(self, n: int = -1) -> bytes:
        return await super().read(READ_SIZE if n == MITM_READ else n)


def widen(reader: object) -> None:
    """Turn an open TCP connection's reader into a :class:`WideStreamReader`
    (UDP/QUIC connections use mitmproxy's own streams: left alone)."""
    if type(reader) is asyncio.StreamReader:
        reader.__class__ = WideStreamReader
        # asyncio pauses the socket past 2 * limit buffered; at the default
        # (64 KiB) a read could never return more than ~384 KiB.
        reader._limit = max(reader._limit, READ_SIZE)  # type: ignore[attr-defined]


def check_compatible() -> None:
    """Raise RuntimeError unless mitmproxy and asyncio are built as this module expects."""
    from mitmproxy.proxy import server

    fn = server.ConnectionHandler.handle_connection
    fn = getattr(fn, "__wrapped__", fn)
    src = inspect.getsource(fn)
    problems = [line for line in _EXPECTED_SOURCE if src.count(line) != 1]
    if "_limit" not in asyncio.StreamReader.__init__.__code__.co_names:
        problems.append("asyncio.StreamReader._limit")
    if problems:
        raise RuntimeError(
            "this mitmproxy (or Python) version reads connections differently "
            f"({', '.join(problems)} not found); "
            "bot_bottle_sidecars.egress.tuning must be updated for it"
        )


def installed() -> bool:
    from mitmproxy.proxy import server

    return getattr(server.ConnectionHandler.handle_connection, _MARK, False)


def install() -> None:
    """Widen every connection's reads (idempotent); refuses an unexpected mitmproxy."""
    from mitmproxy.proxy import server

    check_compatible()
    if installed():
        return
    original: Callable[[Any, Any], Coroutine[Any, Any, None]] = (
        server.ConnectionHandler.handle_connection
    )

    @functools.wraps(original)
    async def handle_connection(self: server.ConnectionHandler, connection: Any) -> None:
        io = self.transports.get(connection)
        if io is not None:
            widen(io.reader)
        await original(self, connection)

    setattr(handle_connection, _MARK, True)
    server.ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]
