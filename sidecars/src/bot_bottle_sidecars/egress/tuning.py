"""Bulk-transfer tuning of mitmproxy's connection I/O.

mitmproxy (12.x) reads every connection with ``reader.read(65535)`` from an
``asyncio.StreamReader`` whose default limit pauses the socket once 128 KiB
are buffered. Each read becomes one event that runs the whole layer stack
(TCP, TLS, HTTP, the stream, then the commands back down to the other leg),
so a streamed download costs one Python round trip per 64 KiB. Reading up to
:data:`READ_SIZE` at a time (asyncio's own ``recv`` size) cuts the proxy's
CPU per GiB by about a third (sidecars/README.md, "Throughput").

Small writes are gathered per event (:class:`CoalescingWrites`): a small
response reaches the agent in one ``send``, not one per HTTP part.

Memory stays bounded: a connection's reader buffers at most
``2 * READ_SIZE`` before asyncio pauses the socket (plus one ``recv`` of 256
KiB), i.e. 768 KiB instead of 384 KiB. Nothing else changes: the bytes read
go through the same layers, hooks and checks as before.

:func:`install` wraps ``ConnectionHandler.handle_connection`` and
``server_event`` after checking that their source still reads and writes as
expected; a mitmproxy version that reads
differently makes the daemon refuse to start (as ``streams.install`` does),
so an upgrade is looked at rather than silently running untuned or wrong.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
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
#: Writes at least this large go out at once (after what is pending): the
#: TLS layer hands bulk data over in records of up to 64 KiB, which gain
#: nothing from being copied together.
COALESCE_BELOW = 16 << 10
#: Lines ``server_event`` must contain: the only place mitmproxy writes.
_EXPECTED_EVENT_SOURCE = ("writer.write(command.data)",)
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


class CoalescingWrites:
    """A connection's writes of one event sent in one ``send``.

    mitmproxy writes each command's bytes as it comes: a small response goes
    to the agent as two TLS records in two ``send`` calls (headers, then
    body), and on loopback each one wakes the reader. The bytes a single
    event produces are gathered here and written together when the event is
    done (:func:`install` flushes at the end of ``server_event``, the only
    place mitmproxy writes: :func:`check_compatible` makes sure);
    ``write_eof`` and ``close`` flush first. Same bytes, same order, same
    connection; nothing is held past the event.
    """

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.pending: list[bytes] = []
        self._write = writer.write
        self._write_eof = writer.write_eof
        self._close = writer.close
        writer.write = self.write  # type: ignore[method-assign]
        writer.write_eof = self.write_eof  # type: ignore[method-assign]
        writer.close = self.close  # type: ignore[method-assign]
        setattr(writer, _COALESCE, self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= COALESCE_BELOW:
            # Bulk data gains nothing from a copy into one buffer.
            self.flush()
            self._write(data)
            return
        self.pending.append(bytes(data))

    def flush(self) -> None:
        if not self.pending:
            return
        data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
        self.pending.clear()
        try:
            self._write(data)
        except (OSError, RuntimeError) as exc:
            # Where mitmproxy's own write would have failed inside the event
            # (it logs and carries on): a connection that cannot take it.
            logging.getLogger(__name__).warning("write to a closed connection dropped: %s", exc)

    def write_eof(self) -> None:
        self.flush()
        self._write_eof()

    def close(self) -> None:
        self.flush()
        self._close()


_COALESCE = "_bot_bottle_coalesce"


def coalesce(writer: object) -> None:
    """Gather a TCP connection's writes per event (UDP/QUIC streams are left alone)."""
    if type(writer) is asyncio.StreamWriter and not hasattr(writer, _COALESCE):
        CoalescingWrites(writer)


def flush(handler: Any) -> None:
    """Send what the handler's connections gathered during an event."""
    for io in list(handler.transports.values()):
        pending = getattr(io.writer, _COALESCE, None)
        if pending is not None and pending.pending:
            pending.flush()


def check_compatible() -> None:
    """Raise RuntimeError unless mitmproxy and asyncio are built as this module expects."""
    from mitmproxy.proxy import server

    fn = server.ConnectionHandler.handle_connection
    fn = inspect.unwrap(fn)
    src = inspect.getsource(fn)
    problems = [line for line in _EXPECTED_SOURCE if src.count(line) != 1]
    event = server.ConnectionHandler.server_event
    event_src = inspect.getsource(inspect.unwrap(event))
    problems += [line for line in _EXPECTED_EVENT_SOURCE if event_src.count(line) != 1]
    if inspect.getsource(server).count("writer.write(") != 1:
        problems.append("writer.write( outside server_event")
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
            coalesce(io.writer)
        await original(self, connection)

    original_event: Callable[[Any, Any], Coroutine[Any, Any, None]] = (
        server.ConnectionHandler.server_event
    )

    @functools.wraps(original_event)
    async def server_event(self: server.ConnectionHandler, event: Any) -> None:
        try:
            await original_event(self, event)
        finally:
            flush(self)

    setattr(handle_connection, _MARK, True)
    server.ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]
    server.ConnectionHandler.server_event = server_event  # type: ignore[method-assign]
