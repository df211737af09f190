"""The streaming half of the DLP contract: carry-over across chunk boundaries."""

from __future__ import annotations

import re

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    Location,
    ScanContext,
)

SECRET = b"tok_" + b"Q" * 20


class _Detector(DlpDetector):
    name = "test"
    max_match_bytes = 32

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        return [
            Finding(
                self.name,
                "tok",
                Action.BLOCK,
                Location("body", offset=m.start(), length=m.end() - m.start()),
                "[REDACTED]",
            )
            for m in re.finditer(rb"tok_Q{20}", data)
        ]


CTX = ScanContext(Direction.OUTBOUND, Location("body"))


def _stream(chunks: list[bytes]) -> list[Finding]:
    scanner = _Detector().stream(CTX)
    found: list[Finding] = []
    for c in chunks:
        found += scanner.feed(c)
    return found + scanner.finish()


def test_match_split_across_two_chunks_is_found_once_at_its_stream_offset() -> None:
    data = b"x" * 100 + SECRET + b"y" * 100
    cut = 100 + len(SECRET) // 2
    found = _stream([data[:cut], data[cut:]])
    assert [f.location.offset for f in found] == [100]


def test_byte_at_a_time_stream_finds_every_match_once() -> None:
    data = b"a" * 50 + SECRET + b"b" * 40 + SECRET + b"c"
    found = _stream([bytes([b]) for b in data])
    assert [f.location.offset for f in found] == [50, 50 + len(SECRET) + 40]


def test_large_chunks_find_matches_in_each() -> None:
    chunk = b"z" * 1000 + SECRET + b"z" * 1000
    found = _stream([chunk, chunk, chunk])
    assert [f.location.offset for f in found] == [1000, 3024, 5048]


def test_direction_both_covers_each() -> None:
    assert Direction.BOTH.covers(Direction.INBOUND)
    assert not Direction.OUTBOUND.covers(Direction.INBOUND)
