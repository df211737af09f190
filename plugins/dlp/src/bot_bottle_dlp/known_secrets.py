"""``known_secrets``: the bottle's own secret values leaving it.

The values come from :attr:`ScanContext.known_secrets` (injected tokens,
``?prompt`` answers, ``${HOST_VAR}`` values), in memory only: they are never
written anywhere, and findings name the encoding, never the value.

Besides the decoded views the pipeline scans, each value is also looked for
*pre-encoded* in the raw bytes -- URL-encoded, JSON-escaped, UTF-16 (LE and
BE), hex, base64 in all three byte alignments and base32 in all five (so a
value inside a longer blob is found wherever it starts), reversed -- and
case-folded (the value, its hex, base32 and reversal match in any case).
The forms are computed once per set of values and matched in one RE2 pass,
which runs only where a Hyperscan prefilter of the same forms (when
installed; :mod:`bot_bottle.dlp.prefilter`) says one occurs.

Values shorter than :data:`MIN_LENGTH` are ignored: a three-letter value
would match ordinary text everywhere.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import re2

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    ScanContext,
    redact,
)
from bot_bottle.dlp.prefilter import Prefilter
from bot_bottle.secrets import Secret

MIN_LENGTH = 8
RULE = "known-secret"
_CACHE_SIZE = 8
_MIN_FRAGMENT = 8  # shortest base64 fragment worth matching


def _base64_fragments(value: bytes, alphabet: str) -> list[bytes]:
    """The part of the base64 text that depends only on ``value``, for each
    of the three offsets ``value`` can start at within a longer blob."""
    out = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + value)
        if alphabet == "url":
            encoded = encoded.translate(bytes.maketrans(b"+/", b"-_"))
        encoded = encoded.rstrip(b"=")
        first = -(-shift * 4 // 3)  # characters touched by the leading pad
        last = (shift + len(value)) * 4 // 3  # characters wholly inside value
        fragment = encoded[first:last]
        if len(fragment) >= _MIN_FRAGMENT:
            out.append(fragment)
    return out


def _base32_fragments(value: bytes) -> list[bytes]:
    """As :func:`_base64_fragments`, for base32 (5 bytes to 8 characters)."""
    out = []
    for shift in range(5):
        encoded = base64.b32encode(b"\0" * shift + value).rstrip(b"=")
        first = -(-shift * 8 // 5)
        last = (shift + len(value)) * 8 // 5
        fragment = encoded[first:last]
        if len(fragment) >= _MIN_FRAGMENT:
            out.append(fragment)
    return out


#: Encodings matched in any letter case.
CASELESS = frozenset({"verbatim", "hex", "base32", "reversed", "utf-16"})


def encodings(value: str) -> dict[bytes, str]:
    """Every form of ``value`` looked for, mapped to the encoding's name
    (forms named in :data:`CASELESS` match in any letter case)."""
    raw = value.encode("utf-8")
    forms: dict[bytes, str] = {}

    def add(form: bytes, name: str) -> None:
        forms.setdefault(form, name)

    add(raw, "verbatim")
    add(urllib.parse.quote(raw, safe="").encode(), "url")
    add(urllib.parse.quote_plus(raw, safe="").encode(), "url")
    add(json.dumps(value)[1:-1].encode(), "json")
    add(json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8"), "json")
    add(value.encode("utf-16-le"), "utf-16")
    add(value.encode("utf-16-be"), "utf-16")
    add(raw.hex().encode(), "hex")
    for alphabet in ("std", "url"):
        for fragment in _base64_fragments(raw, alphabet):
            add(fragment, "base64")
    for fragment in _base32_fragments(raw):
        add(fragment, "base32")
    add(raw[::-1], "reversed")
    return forms


#: Length of the part of each form the Hyperscan prefilter looks for.
_PIECE = 16


def _piece(form: bytes) -> bytes:
    """The part of ``form`` the prefilter looks for: wherever the form
    occurs, so does any part of it (the RE2 pass then finds the form
    itself). Hyperscan's literal matcher checks a candidate at each place
    the last bytes of a literal occur, so the part chosen ends on bytes
    that are rare in text (digits, punctuation, NUL) rather than on
    letters, which in a caseless form occur everywhere: ~3x faster on
    the base32 and reversed forms of a letter-heavy value."""
    if len(form) <= _PIECE:
        return form

    def rarity(end: int) -> int:
        return sum(not chr(b).isalpha() for b in form[end - 3 : end])

    end = max(range(_PIECE, len(form) + 1), key=rarity)  # the first of the best
    return form[end - _PIECE : end]


def _literal(form: bytes) -> bytes:
    # Escape every byte: RE2 in Latin-1 mode then matches bytes exactly.
    return b"".join(bytes([b]) if chr(b).isalnum() and b < 0x80 else b"\\x%02x" % b for b in form)


class _Matcher:
    def __init__(self, secrets: Sequence[Secret]) -> None:
        self.names: list[str] = []
        alternatives: list[bytes] = []
        literals: list[bytes] = []
        caseless: list[bool] = []
        seen: set[bytes] = set()
        for secret in secrets:
            value = secret.reveal()
            if len(value) < MIN_LENGTH:
                continue
            for form, name in encodings(value).items():
                if form in seen:
                    continue
                seen.add(form)
                self.names.append(name)
                literal = _literal(form)
                piece = _piece(form)
                # Hyperscan folds ASCII letters only, RE2 all of Latin-1:
                # any high byte stands for a folded one in the prefilter.
                literals.append(
                    b"".join(b"[\\x80-\\xff]" if b >= 0x80 else _literal(bytes([b])) for b in piece)
                    if name in CASELESS
                    else _literal(piece)
                )
                caseless.append(name in CASELESS)
                if name in CASELESS:
                    literal = b"(?i:%s)" % literal
                alternatives.append(b"(%s)" % literal)
        self.regex: Any = None
        if alternatives:
            options = re2.Options()
            options.encoding = re2.Options.Encoding.LATIN1
            options.max_mem = 64 << 20
            self.regex = re2.compile(b"|".join(alternatives), options)
        self.prefilter = Prefilter(literals, caseless)


class KnownSecretsDetector(DlpDetector):
    name = "known_secrets"
    description = "the bottle's own secret values, verbatim and encoded"
    direction: ClassVar[Direction] = Direction.OUTBOUND
    max_match_bytes: ClassVar[int] = 4096

    def __init__(self) -> None:
        # Compiled matchers for the last few sets of secrets (a bottle's set
        # rarely changes); held in memory only, like the values themselves.
        self._cache: OrderedDict[tuple[Secret, ...], _Matcher] = OrderedDict()

    def _matcher(self, secrets: tuple[Secret, ...]) -> _Matcher:
        matcher = self._cache.get(secrets)
        if matcher is None:
            matcher = _Matcher(secrets)
            self._cache[secrets] = matcher
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(secrets)
        return matcher

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        if not context.known_secrets:
            return []
        matcher = self._matcher(tuple(context.known_secrets))
        if matcher.regex is None or matcher.prefilter.matching(data) == frozenset():
            return []
        findings = []
        for m in matcher.regex.finditer(data):
            encoding = matcher.names[(m.lastindex or 1) - 1]
            start, end = m.span()
            label = RULE if encoding == "verbatim" else f"{RULE} ({encoding})"
            findings.append(
                Finding(
                    detector=self.name,
                    rule=RULE,
                    action=Action.BLOCK,
                    location=replace(context.location, offset=start, length=end - start),
                    snippet=redact(data, start, end, label),
                )
            )
        return findings
