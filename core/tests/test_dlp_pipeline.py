"""The scan pipeline with toy detectors: selection, locations, streams, failing closed."""

from __future__ import annotations

import base64
import gzip
from typing import ClassVar

import pytest

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    Location,
    ScanContext,
)
from bot_bottle.dlp import PIPELINE, ScanPipeline, Verdict, load_detectors, verdict
from bot_bottle.errors import BotBottleError, UnknownPluginError
from bot_bottle.plugins import PluginHost

from .dlp_toys import TOKEN, Tokens


class Whispers(DlpDetector):
    name = "whispers"
    direction: ClassVar[Direction] = Direction.INBOUND

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        i = data.find(b"psst")
        if i == -1:
            return []
        loc = Location(context.location.part, offset=i, length=4)
        return [Finding(self.name, "psst", Action.WARN, loc, "[psst]")]


class Broken(DlpDetector):
    name = "broken"

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        raise RuntimeError(f"leaks the data: {data!r}")


class _Plugin:
    @hookimpl
    def bot_bottle_register_dlp_detectors(self) -> list[Registration[DlpDetector]]:
        return [
            Registration("tokens", Tokens),
            Registration("whispers", Whispers),
            Registration("broken", Broken),
        ]


@pytest.fixture
def host(bot_bottle_host: PluginHost) -> PluginHost:
    bot_bottle_host.register(_Plugin(), "toys")
    return bot_bottle_host


def _pipeline() -> ScanPipeline:
    return ScanPipeline([Tokens()], Direction.OUTBOUND)


def test_default_selection_is_every_detector_of_the_direction(host: PluginHost) -> None:
    assert [d.name for d in load_detectors(host, Direction.OUTBOUND)] == ["broken", "tokens"]
    assert [d.name for d in load_detectors(host, Direction.INBOUND)] == ["whispers"]


def test_false_selects_nothing_and_scans_nothing(host: PluginHost) -> None:
    pipeline = ScanPipeline.from_host(host, Direction.OUTBOUND, False)
    assert pipeline.scan_bytes(TOKEN, Location("body")) == []
    assert pipeline.scan_bytes(b"junk", Location("body"), content_encoding="gzip") == []


def test_a_list_selects_by_name(host: PluginHost) -> None:
    assert [d.name for d in load_detectors(host, Direction.OUTBOUND, ["tokens"])] == ["tokens"]


def test_unknown_name_is_an_error_listing_what_is_installed(host: PluginHost) -> None:
    with pytest.raises(UnknownPluginError, match="installed dlp detectors: broken, tokens"):
        load_detectors(host, Direction.OUTBOUND, ["nope"])


def test_detector_for_the_other_direction_is_an_error(host: PluginHost) -> None:
    with pytest.raises(BotBottleError, match="scans inbound traffic, not outbound"):
        load_detectors(host, Direction.OUTBOUND, ["whispers"])


def test_verdict_is_the_strongest_action() -> None:
    loc = Location("body")
    warn = Finding("d", "r", Action.WARN, loc, "")
    block = Finding("d", "r", Action.BLOCK, loc, "")
    assert verdict([]) is Verdict.NONE
    assert verdict([warn]) is Verdict.WARN
    assert verdict([warn, block]) is Verdict.BLOCK


def test_request_findings_name_the_part_and_header() -> None:
    token = TOKEN.decode()
    findings = _pipeline().scan_request(
        "POST",
        f"https://api.example.test/v1/{token}?key={token}",
        [("Accept", "*/*"), ("X-Leak", f"value {token}")],
        b"body " + TOKEN,
    )
    where = {(f.location.part, f.location.name, f.location.offset) for f in findings}
    assert where == {
        ("url_path", None, 4),
        ("query", None, 4),
        ("header", "X-Leak", 14),
        ("body", None, 5),
    }
    assert all(token not in f.describe() for f in findings)


def test_encoded_token_is_found_and_located_at_the_encoded_run() -> None:
    encoded = base64.b64encode(b"secret=" + TOKEN)
    body = b"line one\nx=" + encoded + b"\n"
    (finding,) = _pipeline().scan_bytes(body, Location("body"))
    loc = finding.location
    assert body[loc.offset : loc.offset + loc.length] == encoded  # type: ignore[operator]
    assert (loc.line, loc.decoded) == (2, "base64")
    assert finding.snippet == "secret=[REDACTED:tok]"


def test_gzip_body_is_decoded_from_the_header() -> None:
    findings = _pipeline().scan_request(
        "POST", "https://x.test/", {"Content-Encoding": "gzip"}, gzip.compress(b"a " + TOKEN)
    )
    assert [(f.location.part, f.location.offset) for f in findings] == [("body", 2)]


def test_undecodable_body_is_a_block() -> None:
    (finding,) = _pipeline().scan_request(
        "POST", "https://x.test/", {"content-encoding": "gzip"}, b"plain text, not gzip"
    )
    assert (finding.detector, finding.rule, finding.action) == (
        PIPELINE,
        "undecodable-body",
        Action.BLOCK,
    )
    assert "not valid gzip" in finding.snippet


def test_unsupported_coding_is_a_block() -> None:
    (finding,) = _pipeline().scan_response(200, {"Content-Encoding": "compress"}, b"\x1f\x9d")
    assert finding.rule == "undecodable-body"


def test_a_detector_that_raises_fails_closed_without_quoting_data(host: PluginHost) -> None:
    pipeline = ScanPipeline.from_host(host, Direction.OUTBOUND, ["broken"])
    (finding,) = pipeline.scan_bytes(TOKEN, Location("body"))
    assert (finding.rule, finding.action) == ("detector-error", Action.BLOCK)
    assert "RuntimeError" in finding.snippet
    assert "tok_" not in finding.snippet


def _stream(
    pipeline: ScanPipeline, chunks: list[bytes], content_encoding: str | None = None
) -> list[Finding]:
    scanner = pipeline.stream(Location("body"), content_encoding=content_encoding)
    found: list[Finding] = []
    for chunk in chunks:
        found += scanner.feed(chunk)
    return found + scanner.finish()


def test_token_split_across_two_chunks_is_found_once() -> None:
    data = b"x" * 1000 + TOKEN + b"y" * 1000
    cut = 1000 + len(TOKEN) // 2
    found = _stream(_pipeline(), [data[:cut], data[cut:]])
    assert [f.location.offset for f in found] == [1000]


def test_gzip_stream_in_tiny_chunks_is_decoded_and_scanned() -> None:
    body = gzip.compress(b"z" * 5000 + TOKEN + b"z" * 5000 + TOKEN)
    found = _stream(
        _pipeline(), [body[i : i + 7] for i in range(0, len(body), 7)], content_encoding="gzip"
    )
    assert [f.location.offset for f in found] == [5000, 10000 + len(TOKEN)]


def test_a_compressed_stream_is_scanned_as_it_inflates_with_bounded_memory() -> None:
    import tracemalloc

    import brotli

    # One 20 MiB chunk on the wire would inflate to 48 MiB: scanned in pieces,
    # the token past the first pieces is found and nothing holds it all.
    data = bytes(40 << 20) + TOKEN + bytes(8 << 20)
    body = brotli.compress(data, quality=1)
    tracemalloc.start()
    try:
        found = _stream(_pipeline(), [body], content_encoding="br")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.location.offset for f in found] == [40 << 20]
    assert peak < len(body) + (8 << 20), peak


def test_a_compressed_stream_past_its_decoded_cap_is_a_block() -> None:
    scanner = _pipeline().stream(
        Location("body"), content_encoding="gzip", max_decoded_bytes=1 << 20
    )
    found = scanner.feed(gzip.compress(bytes(2 << 20)))
    assert [(f.rule, f.action) for f in found] == [("undecodable-body", Action.BLOCK)]
    assert "inflates to more than" in found[0].snippet
    assert scanner.feed(b"more") == [] and scanner.finish() == []


def test_truncated_gzip_stream_is_a_block_at_finish() -> None:
    body = gzip.compress(b"harmless " * 100)[:-8]
    found = _stream(_pipeline(), [body], content_encoding="gzip")
    assert [f.rule for f in found] == ["undecodable-body"]


def test_inbound_pipeline_warns() -> None:
    pipeline = ScanPipeline([Whispers()], Direction.INBOUND)
    findings = pipeline.scan_response(200, {}, b"hey psst")
    assert verdict(findings) is Verdict.WARN


def test_a_match_inside_an_encoded_run_is_reported_once() -> None:
    # The raw view and the URL-decoded view both see the token.
    findings = _pipeline().scan_bytes(b"q=" + TOKEN + b"%20and%20more", Location("query"))
    assert [(f.location.offset, f.location.decoded) for f in findings] == [(2, None)]


def test_header_names_are_scanned_too() -> None:
    (finding,) = _pipeline().scan_request("GET", "https://x.test/", {TOKEN.decode(): "1"}, None)
    assert (finding.location.part, finding.location.offset) == ("header", 0)


def test_headers_as_byte_pairs_with_repeats_are_all_scanned() -> None:
    # mitmproxy's Headers.fields: bytes pairs, a name may repeat.
    fields = ((b"Cookie", b"a=1"), (b"Cookie", b"b=" + TOKEN), (b"Content-Encoding", b"gzip"))
    findings = _pipeline().scan_request("POST", "https://x.test/", fields, gzip.compress(TOKEN))
    assert [(f.location.part, f.location.name) for f in findings] == [
        ("header", "Cookie"),
        ("body", None),
    ]


def test_redact_replaces_plain_and_encoded_matches_for_logs() -> None:
    encoded = base64.b64encode(b"k=" + TOKEN)
    line = b"GET /a/" + TOKEN + b"?x=" + encoded + b" done"
    assert _pipeline().redact(line) == b"GET /a/[REDACTED:tok]?x=[REDACTED:tok] done"
    assert _pipeline().redact(b"nothing here") == b"nothing here"
