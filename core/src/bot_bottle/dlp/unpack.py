"""Compressed data and archives recognised by their magic bytes, unpacked.

``Content-Encoding`` says what a sender *declares*; an agent that wants a
token past the scan sends a gzip, bz2, xz, zstd, zip or tar body and
declares nothing. The pipeline therefore also looks at the first bytes of
every body (and of every base64 run that decodes to binary) and unpacks
what it recognises, nested up to :data:`MAX_NESTING` levels (a tar.gz of a
zip is three).

The work is bounded like ``Content-Encoding`` decoding: every decompressor
is called with a maximum output length, the total output of one unpacking
shares one budget, and an archive may hold at most :data:`MAX_MEMBERS`
members. Past the budget, :func:`unpack` either raises
:class:`~bot_bottle.dlp.content.UndecodableError` (``strict``: the caller
refuses the body, as for a Content-Encoding bomb) or stops and returns
what it has (a blob inside a larger body). Damaged or truncated data yields
what decoded before the damage. Encrypted zip members cannot be read (a
cipher is out of reach, see plugins/dlp/README.md); their names are still
scanned.
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable

from bot_bottle.dlp.content import UndecodableError, _zstd

MAX_NESTING = 3
MAX_MEMBERS = 1000
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Budget:
    def __init__(self, limit: int, strict: bool) -> None:
        self.left = limit
        self.limit = limit
        self.strict = strict
        self.exhausted = False

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            self.exhausted = True
            if self.strict:
                raise UndecodableError(
                    f"the body unpacks to more than {self.limit} bytes, too large to scan",
                    hint="send a smaller body",
                )


def kind(data: bytes) -> str | None:
    """The compression or archive format ``data`` starts with, if any."""
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        return "zlib"
    if data[:3] == b"BZh" and data[4:10] == b"1AY&SY":
        return "bz2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:4] == _ZSTD_MAGIC:
        return "zstd"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    if len(data) >= 262 and data[257:262] == b"ustar":
        return "tar"
    return None


def _stream(data: bytes, make: Callable[[], object], budget: _Budget, multi: bool = True) -> bytes:
    """Everything a decompressor yields from ``data`` within the budget; the
    decompressor objects of zlib, bz2, lzma and zstd share this interface."""
    out: list[bytes] = []
    while data:
        dec = make()
        try:
            piece: bytes = dec.decompress(data, max(budget.left, 0) + 1)  # type: ignore[attr-defined]
        except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError, Exception):
            break
        budget.take(len(piece))
        out.append(piece)
        if budget.exhausted or not getattr(dec, "eof", False) or not multi:
            break
        data = getattr(dec, "unused_data", b"")
    return b"".join(out)


def _zip(data: bytes, budget: _Budget) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return out
    for info in infos[:MAX_MEMBERS]:
        out.append(("zip", info.filename.encode("utf-8", "surrogateescape")))
        if info.is_dir() or budget.exhausted:
            continue
        try:
            with archive.open(info) as member:
                content = member.read(max(budget.left, 0) + 1)
        except (
            RuntimeError,
            zipfile.BadZipFile,
            OSError,
            ValueError,
            EOFError,
            NotImplementedError,
        ):
            continue  # encrypted or damaged member
        budget.take(len(content))
        out.append(("zip", content))
    if len(infos) > MAX_MEMBERS and budget.strict:
        raise UndecodableError(
            f"the archive has more than {MAX_MEMBERS} members, too many to scan",
            hint="send fewer files at once",
        )
    return out


def _tar(data: bytes, budget: _Budget) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115 -- in memory
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return out
    count = 0
    try:
        for member in archive:
            count += 1
            if count > MAX_MEMBERS:
                if budget.strict:
                    raise UndecodableError(
                        f"the archive has more than {MAX_MEMBERS} members, too many to scan",
                        hint="send fewer files at once",
                    )
                break
            out.append(("tar", member.name.encode("utf-8", "surrogateescape")))
            if member.linkname:
                out.append(("tar", member.linkname.encode("utf-8", "surrogateescape")))
            if not member.isfile() or budget.exhausted:
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            content = handle.read(max(budget.left, 0) + 1)
            budget.take(len(content))
            out.append(("tar", content))
    except (tarfile.TarError, OSError, ValueError, EOFError):
        pass
    return out


def _one(data: bytes, budget: _Budget) -> list[tuple[str, bytes]] | None:
    fmt = kind(data)
    if fmt is None:
        return None
    if fmt == "gzip":
        return [(fmt, _stream(data, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), budget))]
    if fmt == "zlib":
        return [(fmt, _stream(data, lambda: zlib.decompressobj(zlib.MAX_WBITS), budget, False))]
    if fmt == "bz2":
        return [(fmt, _stream(data, bz2.BZ2Decompressor, budget))]
    if fmt == "xz":
        return [(fmt, _stream(data, lzma.LZMADecompressor, budget))]
    if fmt == "zstd":
        return [(fmt, _stream(data, _zstd().ZstdDecompressor, budget))]
    if fmt == "zip":
        return _zip(data, budget)
    return _tar(data, budget)


def unpack(data: bytes, limit: int, *, strict: bool) -> list[tuple[str, bytes]] | None:
    """The contents of ``data`` if it starts with a compression or archive
    magic: ``[(encoding, content), ...]`` (for an archive, each member's
    name then its content), nested formats unpacked in turn and named
    outermost first (``"gzip>tar"``); ``None`` if ``data`` is neither."""
    budget = _Budget(limit, strict)
    first = _one(data, budget)
    if first is None:
        return None
    pieces = first
    for _ in range(MAX_NESTING - 1):
        nested: list[tuple[str, bytes]] = []
        changed = False
        for encoding, content in pieces:
            inner = _one(content, budget) if content else None
            if inner is None:
                nested.append((encoding, content))
                continue
            changed = True
            nested.extend((f"{encoding}>{e}", c) for e, c in inner)
        pieces = nested
        if not changed:
            break
    return [(e, c) for e, c in pieces if c]
