"""Decoded views: encoded runs are decoded once and located in the raw bytes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import urllib.parse
import uuid

from bot_bottle.dlp.views import build_views, decode_runs

SECRET = b"hunter2-correct-horse-battery"


def _decoded(data: bytes) -> list[bytes]:
    return [view.data for view in build_views(data)[1:]]


def _located(data: bytes, needle: bytes) -> tuple[int, int, tuple[str, ...]]:
    """The narrowest place a decoded view finds ``needle`` at (as the
    pipeline reports it)."""
    places = []
    for view in build_views(data)[1:]:
        i = view.data.find(needle)
        while i != -1:
            places.append(view.locate(i, i + len(needle)))
            i = view.data.find(needle, i + 1)
    if not places:
        raise AssertionError(f"{needle!r} not in any decoded view")
    return min(places, key=lambda p: p[1] - p[0])


def test_base64_run_is_decoded_and_located_at_the_run() -> None:
    encoded = base64.b64encode(b"user:" + SECRET)
    data = b"Authorization: Basic " + encoded + b"\r\n"
    start, end, chain = _located(data, SECRET)
    assert data[start:end] == encoded
    assert chain == ("base64",)


def test_url_encoding_inside_base64_is_undone_two_levels_down() -> None:
    # One leading byte encodes to "/" and shifts the rest out of alignment, so
    # the raw run after "%2F" does not decode until the URL-encoding is undone.
    encoded = urllib.parse.quote(base64.b64encode(b"\xfc" + SECRET), safe="")
    assert encoded.startswith("%2F")
    data = b"q=" + encoded.encode()
    chains = set()
    for view in build_views(data)[1:]:
        i = view.data.find(SECRET)
        if i != -1:
            chains.add(view.locate(i, i + len(SECRET))[2])
    assert ("url", "base64") in chains


def test_json_unicode_escapes_are_undone() -> None:
    data = json.dumps({"k": SECRET.decode()}).replace("-", "\\u002d").encode()
    *_, chain = _located(data, SECRET)
    assert chain == ("json",)


def test_hex_run_of_text_is_decoded() -> None:
    *_, chain = _located(b"x=" + SECRET.hex().encode(), SECRET)
    assert chain == ("hex",)


def test_hashes_uuids_and_identifiers_are_not_decoded() -> None:
    sha = hashlib.sha1(b"x", usedforsecurity=False).hexdigest().encode()
    data = b"\n".join(
        [
            sha,
            hashlib.sha256(b"y").hexdigest().encode(),
            str(uuid.uuid4()).encode(),
            b"test_match_split_across_two_chunks_is_found_once",
            b"sha512-" + base64.b64encode(hashlib.sha512(b"z").digest()),
        ]
    )
    # A line break between two words may split a token: only that is looked at.
    assert [r for r in decode_runs(data) if r[2] != "joined"] == []
    assert all(b"sha512" in r[3] for r in decode_runs(data))


def test_misaligned_base64_at_the_buffer_start_is_still_decoded() -> None:
    # A streamed window may start in the middle of a base64 run.
    encoded = base64.b64encode(b"prefix text: " + SECRET + b" more text")
    for cut in range(1, 4):
        assert any(SECRET in d for d in _decoded(encoded[cut:])), cut


def test_plain_text_has_no_decoded_views() -> None:
    assert len(build_views(b"Just some ordinary words, nothing encoded.")) == 1


def test_base64_of_gzip_is_inflated() -> None:
    data = b'{"blob": "' + base64.b64encode(gzip.compress(b"k=" + SECRET)) + b'"}'
    *_, chain = _located(data, SECRET)
    assert chain == ("base64+gzip",)


def test_url_decoding_matches_the_standard_library_on_awkward_input() -> None:
    from bot_bottle.dlp.views import _unquote

    for run in (b"%41%4", b"%", b"100%", b"%zz%41", b"a%2Fb%2f%", b"%41" * 1000 + b"%4"):
        assert _unquote(run) == urllib.parse.unquote_to_bytes(run), run
