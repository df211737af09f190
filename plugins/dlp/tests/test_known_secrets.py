"""known_secrets: the bottle's own values, verbatim and in every encoding."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from bot_bottle.contracts.dlp import Action, Direction, Location, ScanContext
from bot_bottle.secrets import Secret
from bot_bottle_dlp.known_secrets import KnownSecretsDetector, encodings

VALUE = 'p@ss/w0rd+"quoted"&more'
CTX = ScanContext(Direction.OUTBOUND, Location("body"), known_secrets=(Secret(VALUE),))
DETECTOR = KnownSecretsDetector()

FORMS = {
    "verbatim": VALUE.encode(),
    "url": urllib.parse.quote(VALUE, safe="").encode(),
    "url-plus": urllib.parse.quote_plus(VALUE).encode(),
    "json": json.dumps({"v": VALUE}).encode(),
    "hex": VALUE.encode().hex().encode(),
    "HEX": VALUE.encode().hex().upper().encode(),
    "base64": base64.b64encode(VALUE.encode()),
    "base64url": base64.urlsafe_b64encode(VALUE.encode()),
    # the forms an agent tried that an exact-value match missed
    "utf-16le": VALUE.encode("utf-16-le"),
    "utf-16be": VALUE.encode("utf-16-be"),
    "utf-16 with BOM": VALUE.encode("utf-16"),
    "upper-cased": VALUE.upper().encode(),
    "lower-cased": VALUE.lower().encode(),
    "swapped case": VALUE.swapcase().encode(),
    "base32": base64.b32encode(VALUE.encode()),
    "base32 lower-case": base64.b32encode(VALUE.encode()).lower(),
    "reversed": VALUE[::-1].encode(),
    "reversed upper-cased": VALUE[::-1].upper().encode(),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_value_is_found_in_each_encoding(form: str) -> None:
    findings = DETECTOR.scan(b"prefix " + FORMS[form] + b" suffix", CTX)
    assert [(f.rule, f.action) for f in findings] == [("known-secret", Action.BLOCK)]


@pytest.mark.parametrize("lead", [b"", b"a", b"ab", b"abc", b"abcd"])
def test_value_inside_a_longer_base32_blob_is_found_at_any_alignment(lead: bytes) -> None:
    blob = base64.b32encode(lead + VALUE.encode() + b" and then some trailing text")
    assert DETECTOR.scan(blob, CTX), lead


def test_forms_are_computed_once_per_set_of_values() -> None:
    detector = KnownSecretsDetector()
    detector.scan(b"x", CTX)
    matcher = detector._cache[tuple(CTX.known_secrets)]
    detector.scan(VALUE[::-1].encode(), CTX)
    assert detector._cache[tuple(CTX.known_secrets)] is matcher


@pytest.mark.parametrize("lead", [b"", b"a", b"ab", b"abc", b"abcd"])
def test_value_inside_a_longer_base64_blob_is_found_at_any_alignment(lead: bytes) -> None:
    blob = base64.b64encode(lead + VALUE.encode() + b" and then some trailing text")
    assert DETECTOR.scan(blob, CTX), lead


def test_findings_and_their_snippets_never_hold_the_value() -> None:
    for form in FORMS.values():
        for f in DETECTOR.scan(b"k=" + form, CTX):
            assert VALUE not in repr(f)
            assert form.decode("latin-1") not in repr(f)


def test_short_values_are_ignored() -> None:
    ctx = ScanContext(Direction.OUTBOUND, Location("body"), known_secrets=(Secret("abc"),))
    assert DETECTOR.scan(b"abc abc abc", ctx) == []


def test_no_secrets_no_findings() -> None:
    assert DETECTOR.scan(VALUE.encode(), ScanContext(Direction.OUTBOUND, Location("body"))) == []


def test_every_form_is_distinct_text() -> None:
    forms = encodings(VALUE)
    assert VALUE.encode() in forms
    assert all(len(f) >= 8 for f in forms)


@pytest.mark.parametrize(
    "value", [VALUE, "a-prompted-password-value", "sk-ant-oat01-" + "Zq8" * 31, "Abcdefgh"]
)
def test_the_prefilter_looks_for_a_part_of_every_form(value: str) -> None:
    from bot_bottle.dlp import prefilter
    from bot_bottle_dlp import known_secrets

    for form in encodings(value):
        piece = known_secrets._piece(form)  # pyright: ignore[reportPrivateUsage]
        assert piece in form
        assert len(piece) == min(len(form), 16)
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    matcher = known_secrets._Matcher((Secret(value),))  # pyright: ignore[reportPrivateUsage]
    assert matcher.prefilter.matching(b"nothing of it here") == frozenset()
    for form, name in encodings(value).items():
        for shown in (form, form.swapcase()) if name in known_secrets.CASELESS else (form,):
            body = b"lead text " + shown + b" tail"
            assert matcher.prefilter.matching(body), (name, shown)
            assert DETECTOR.scan(
                body,
                ScanContext(Direction.OUTBOUND, Location("body"), known_secrets=(Secret(value),)),
            )
