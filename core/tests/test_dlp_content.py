"""Content-Encoding is undone before scanning; what cannot be undone is refused."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from bot_bottle.dlp.content import (
    ContentDecoder,
    UndecodableError,
    _zstd,
    decode_content,
    parse_content_encoding,
)

zstd = _zstd()

DATA = b"the quick brown fox " * 5000
ENCODED = {
    "gzip": gzip.compress(DATA),
    "deflate": zlib.compress(DATA),
    "br": brotli.compress(DATA),
    "zstd": zstd.compress(DATA),
}


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_each_coding_is_undone_whole_and_in_small_chunks(coding: str) -> None:
    body = ENCODED[coding]
    assert decode_content(body, (coding,)) == DATA
    dec = ContentDecoder((coding,))
    out = b"".join(dec.feed(body[i : i + 13]) for i in range(0, len(body), 13))
    assert out + dec.finish() == DATA


def test_raw_deflate_without_zlib_header_is_accepted() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = raw.compress(DATA) + raw.flush()
    assert decode_content(body, ("deflate",)) == DATA


def test_stacked_codings_are_undone_last_first() -> None:
    body = brotli.compress(gzip.compress(DATA))
    assert decode_content(body, parse_content_encoding("gzip, br")) == DATA


def test_every_gzip_member_is_decoded() -> None:
    # A second member must not pass unscanned.
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decode_content(body, ("gzip",)) == b"first second"


def test_every_zstd_frame_is_decoded() -> None:
    body = zstd.compress(b"first ") + zstd.compress(b"second")
    assert decode_content(body, ("zstd",)) == b"first second"
    dec = ContentDecoder(("zstd",))
    out = b"".join(dec.feed(body[i : i + 5]) for i in range(0, len(body), 5))
    assert out + dec.finish() == b"first second"


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_bomb_is_handed_on_in_bounded_pieces_and_capped(coding: str) -> None:
    bomb = {"gzip": gzip.compress, "br": brotli.compress, "zstd": zstd.compress}[coding](
        bytes(16 << 20)
    )
    pieces: list[int] = []
    ContentDecoder((coding,)).feed_each(bomb, lambda b: pieces.append(len(b)))
    # ~1 MiB each (brotli's output limit is approximate: up to 2 MiB).
    assert sum(pieces) == 16 << 20 and max(pieces) <= 2 << 20
    # Valid, only very compressible: decoded whole, not taken for truncated.
    assert decode_content(bomb, (coding,)) == bytes(16 << 20)
    with pytest.raises(UndecodableError, match="inflates to more than"):
        ContentDecoder((coding,), max_bytes=4 << 20).feed_each(bomb, lambda b: None)


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(DATA)[:-12]),
        ("deflate", zlib.compress(DATA) + b"trailing"),
        ("br", b"\xff\xff garbage"),
        ("br", brotli.compress(DATA)[:-5]),
        ("zstd", b"\x28\xb5\x2f\xfd garbage"),
        ("zstd", zstd.compress(DATA)[:-5]),
    ],
)
def test_corrupt_or_truncated_body_is_refused(coding: str, body: bytes) -> None:
    with pytest.raises(UndecodableError, match=coding):
        decode_content(body, (coding,))


def test_unknown_coding_is_refused_with_a_hint() -> None:
    with pytest.raises(UndecodableError) as info:
        parse_content_encoding("compress")
    assert "compress" in info.value.message
    assert info.value.hint


def test_identity_and_x_gzip_are_understood() -> None:
    assert parse_content_encoding("identity") == ()
    assert parse_content_encoding("X-GZIP , identity") == ("gzip",)


def test_decompression_bomb_is_refused_before_it_fills_memory() -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(UndecodableError, match="inflates to more than"):
        decode_content(bomb, ("gzip",), max_bytes=1 << 20)
