"""HTTP ``Content-Encoding`` (gzip, deflate, br, zstd) undone before scanning.

A compressed body cannot be scanned, and a body that cannot be decoded
cannot be scanned either, so both the whole-buffer and the streaming
decoder raise :class:`UndecodableError` and the pipeline turns that into a
*block* (fail closed). The same goes for an encoding we do not know and for
a body that inflates past the size limit (a decompression bomb).

Decoders hand their output on in pieces of about 1 MiB (``feed_each``), so
a stream scanner can scan a bomb piece by piece without ever holding it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from bot_bottle.errors import BotBottleError

#: Bytes a whole body may inflate to before it is refused.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024
_PIECE = 1024 * 1024  # output produced per decompressor call
_CODINGS = ("gzip", "deflate", "br", "zstd")


def _zstd() -> Any:
    """The standard library's zstd (Python 3.14+) or its backport."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found,no-redef]
    return zstd


class UndecodableError(BotBottleError):
    """A body whose Content-Encoding cannot be undone (so it cannot be scanned)."""


def parse_content_encoding(value: str | None) -> tuple[str, ...]:
    """The encodings named by a ``Content-Encoding`` header, in the order
    they were applied. ``identity`` and empty entries are dropped; an
    unknown coding raises :class:`UndecodableError`."""
    if not value:
        return ()
    codings = []
    for part in value.split(","):
        coding = part.strip().lower()
        if coding in ("", "identity"):
            continue
        if coding == "x-gzip":
            coding = "gzip"
        if coding not in _CODINGS:
            raise UndecodableError(
                f"Content-Encoding {coding!r} is not supported, so the body cannot be scanned",
                hint="send the body uncompressed or with gzip, deflate, br or zstd",
            )
        codings.append(coding)
    return tuple(codings)


class _Inflater:
    """One coding, incrementally. ``feed`` returns what it could decode."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._zlib: zlib._Decompress | None = None
        self._pending = b""  # deflate: bytes held until the header is known
        self._brotli = None
        self._zstd: Any = None
        if coding == "gzip":
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "br":
            import brotli

            self._brotli = brotli.Decompressor()
        elif coding == "zstd":
            self._zstd = _zstd().ZstdDecompressor()

    def _fail(self, why: object) -> UndecodableError:
        return UndecodableError(
            f"the body is not valid {self.coding} data ({why}), so it cannot be scanned",
            hint="the request was refused because its content could not be checked",
        )

    def feed(self, data: bytes, emit: Callable[[bytes], None]) -> None:
        if self._brotli is not None:
            self._feed_brotli(data, emit)
            return
        if self._zstd is not None:
            self._feed_zstd(data, emit)
            return
        if self._zlib is None:
            # "deflate" is meant to be zlib-wrapped (RFC 9110) but some servers
            # send raw deflate; the first two bytes tell which.
            self._pending += data
            if len(self._pending) < 2:
                return
            cmf, flg = self._pending[0], self._pending[1]
            wrapped = cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._pending = self._pending, b""
        self._feed_zlib(data, emit)

    def _feed_zlib(self, data: bytes, emit: Callable[[bytes], None]) -> None:
        assert self._zlib is not None
        try:
            more = bool(data)
            while more:
                if self._zlib.eof:
                    if self.coding != "gzip":
                        raise self._fail("data after the end of the stream")
                    # Several gzip members in a row are one valid body: go on
                    # with the next, or its content would pass unscanned.
                    self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = self._zlib.decompress(data, _PIECE)
                emit(out)
                data = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
                # A full piece may leave output inside zlib with no input left.
                more = bool(data) or (len(out) == _PIECE and not self._zlib.eof)
        except zlib.error as exc:
            raise self._fail(exc) from None

    def _feed_brotli(self, data: bytes, emit: Callable[[bytes], None]) -> None:
        import brotli

        dec = self._brotli
        assert dec is not None
        try:
            if data and dec.is_finished():
                raise self._fail("data after the end of the stream")
            emit(dec.process(data, output_buffer_limit=_PIECE))
            # Drain what the input already given decodes to. can_accept_more_data()
            # turning True only means input may be fed again: more output can
            # still be pending (a highly compressed body), and leaving it
            # there would make a valid body look truncated at finish.
            while True:
                out = dec.process(b"", output_buffer_limit=_PIECE)
                if not out and dec.can_accept_more_data():
                    break
                emit(out)
        except brotli.error as exc:
            raise self._fail(exc) from None

    def _feed_zstd(self, data: bytes, emit: Callable[[bytes], None]) -> None:
        zstd = _zstd()
        dec = self._zstd
        try:
            while True:
                if dec.eof:
                    if not data:
                        return
                    # Another frame: a body may hold several (RFC 8878), and
                    # the next one's content must not pass unscanned.
                    dec = self._zstd = zstd.ZstdDecompressor()
                emit(dec.decompress(data, _PIECE))
                if dec.eof:
                    data = dec.unused_data
                elif dec.needs_input:
                    return
                else:
                    data = b""  # more output waits inside the decompressor
        except zstd.ZstdError as exc:
            raise self._fail(exc) from None

    def finish(self, emit: Callable[[bytes], None]) -> None:
        if self._zstd is not None:
            if not self._zstd.eof:
                raise self._fail("truncated")
            return
        if self._zlib is None and self._brotli is None:
            if self._pending:  # a deflate body shorter than its header
                raise self._fail("truncated")
            if self.coding == "deflate":
                return  # empty body
        if self._brotli is not None:
            if not self._brotli.is_finished():
                raise self._fail("truncated")
            return
        assert self._zlib is not None
        try:
            emit(self._zlib.flush())
        except zlib.error as exc:
            raise self._fail(exc) from None
        if not self._zlib.eof:
            raise self._fail("truncated")


class ContentDecoder:
    """Undoes a chain of content codings on a stream fed in chunks.

    ``codings`` are in the order they were applied (as the header lists
    them); they are undone last first. ``max_bytes`` bounds the decoded
    total (``None``: unbounded, for streams scanned window by window).
    """

    def __init__(self, codings: tuple[str, ...], max_bytes: int | None = None) -> None:
        self._stages = [_Inflater(c) for c in reversed(codings)]
        self._max = max_bytes
        self._total = 0

    def _push(self, index: int, data: bytes, sink: Callable[[bytes], None]) -> None:
        # Each stage hands its output on as it is produced, so the size
        # limit stops a decompression bomb before it fills memory.
        if not data:
            return
        if index == len(self._stages):
            self._total += len(data)
            if self._max is not None and self._total > self._max:
                raise UndecodableError(
                    f"the body inflates to more than {self._max} bytes, too large to scan",
                    hint="send a smaller body",
                )
            sink(data)
            return
        self._stages[index].feed(data, lambda b: self._push(index + 1, b, sink))

    def _finish(self, index: int, sink: Callable[[bytes], None]) -> None:
        if index == len(self._stages):
            return
        self._stages[index].finish(lambda b: self._push(index + 1, b, sink))
        self._finish(index + 1, sink)

    def feed_each(self, chunk: bytes, sink: Callable[[bytes], None]) -> None:
        """Decode ``chunk``, handing the output to ``sink`` in pieces of about
        1 MiB (at most 2) as they are produced (nothing is accumulated here)."""
        self._push(0, chunk, sink)

    def finish_each(self, sink: Callable[[bytes], None]) -> None:
        self._finish(0, sink)

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        self._push(0, chunk, out.append)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        self._finish(0, out.append)
        return b"".join(out)


def decode_content(
    body: bytes, codings: tuple[str, ...], max_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
) -> bytes:
    """Undo ``codings`` (as listed by the header) on a whole body."""
    if not codings:
        if max_bytes is not None and len(body) > max_bytes:
            raise UndecodableError(
                f"the body is larger than {max_bytes} bytes, too large to scan",
                hint="send a smaller body",
            )
        return body
    dec = ContentDecoder(codings, max_bytes)
    return dec.feed(body) + dec.finish()
