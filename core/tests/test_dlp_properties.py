"""Properties of the pipeline on arbitrary input (hypothesis, bounded)."""

from __future__ import annotations

import itertools
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    Finding,
    Location,
)
from bot_bottle.dlp import ScanPipeline

from .dlp_toys import TOKEN, Tokens

PIPELINE = ScanPipeline([Tokens()], Direction.OUTBOUND)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(data=st.binary(max_size=4000), coding=st.sampled_from([None, "gzip", "deflate", "br", "x"]))
def test_arbitrary_bytes_never_raise(data: bytes, coding: str | None) -> None:
    findings = PIPELINE.scan_bytes(data, Location("body"), content_encoding=coding)
    if coding is not None:
        # Random bytes are almost never valid compressed data: refused, not passed.
        assert findings == [] or findings[0].action is Action.BLOCK


@FAST
@given(
    pieces=st.lists(st.sampled_from([b" ", b"word", b"\n", b"%41", b"==", TOKEN]), max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
)
def test_stream_finds_exactly_the_plain_tokens_whatever_the_chunking(
    pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    expected = [m.start() for m in re.finditer(re.escape(TOKEN), data)]
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    scanner = PIPELINE.stream(Location("body"))
    found: list[Finding] = []
    for a, b in itertools.pairwise(bounds):
        found += scanner.feed(data[a:b])
    found += scanner.finish()
    assert sorted(f.location.offset or 0 for f in found if f.location.decoded is None) == expected
