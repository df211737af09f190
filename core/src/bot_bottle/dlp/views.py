"""Decoded views: URL-encoding, JSON escapes, base64 and hex runs undone.

The raw bytes are view 0. Each further view is the concatenation of every
run of the previous view that decodes to something worth scanning, so a
token that was base64-encoded and then URL-encoded is found two views down
(at most :data:`MAX_DEPTH`). Each view remembers, per decoded segment, which
bytes of its parent it came from, so a finding in a decoded view is located
at the encoded run in the raw bytes.

Only runs that *contain* an encoding are decoded (a ``%XX``, a ``\\uXXXX`` or
``\\/``, a base64 or hex run), never the whole buffer: an ordinary body adds
little to scan. Base64 and hex decodings are kept only when they come out as
mostly printable text (secrets are text; images and hashes are not), which
is what keeps git SHAs, UUIDs and embedded images out of the decoded views.

A base64 run that decodes to a gzip or zlib stream is inflated too
(``base64+gzip``), bounded to 1 MiB per run.

Known limits: a run is decoded at its start (plus the three other base64
alignments when the run touches the start of the buffer, as it may in a
streamed window); binary payloads that happen to carry text are dropped;
runs are bounded to :data:`_WINDOW` bytes either side of the escape that
revealed them for URL/JSON, and base64/hex runs longer than
:data:`MAX_RUN_BYTES` are decoded only up to that length.

Further decodings, each looked for only where its marker is (a NUL byte, a
non-ASCII byte, an ``&``, an ``=``, a line break inside a token-shaped run):

* ``utf-16``: runs of ASCII text in UTF-16LE or BE (every other byte NUL),
  with or without a byte-order mark;
* ``unicode``: words holding non-ASCII characters, with zero-width and
  other invisible format characters (soft hyphen, word joiner, BOM, tags,
  bidi controls) removed and NFKC applied (fullwidth letters become ASCII);
* ``html``: HTML/XML character and entity references (``&#103;``,
  ``&#x67;``, ``&amp;``);
* ``qp``: quoted-printable (``=3D``, soft line breaks ``=\n``);
* ``hex``: hex bytes with separators (``67:68:70``, ``67 68 70``, ``67-68``);
* ``base64``: base64 broken by whitespace or line breaks (MIME, PEM
  bodies, an attacker's every-few-characters wrapping);
* ``joined``: a token split across a line break (the line break and the
  next line's indentation removed where both sides are token characters);
* ``pem-body``: a base64 run whose decoding is a DER private key (or an
  OpenSSH key) without its BEGIN/END armour is re-armoured, so the
  private-key rule sees it;
* compressed data and archives recognised by their magic bytes (gzip,
  zlib, bz2, xz, zstd, zip and tar members; :mod:`bot_bottle.dlp.unpack`)
  at the start of the buffer and of every base64 run that decodes to
  binary, whatever ``Content-Encoding`` says.

The base64 runs, the spaced-base64 matches and the hex-with-separators
regions are found by a plugin's native run finder when one is installed
(:func:`use_run_finder`, through the ``dlp_accelerators`` hook:
bot-bottle-dlp's C ``_runs``), else here in Python; the views are the same.
"""

from __future__ import annotations

import binascii
import bisect
import codecs
import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import re2

from bot_bottle.contracts.dlp import Runs
from bot_bottle.dlp.content import DEFAULT_MAX_DECODED_BYTES
from bot_bottle.dlp.prefilter import Prefilter
from bot_bottle.dlp.unpack import unpack

MAX_DEPTH = 3
MAX_RUN_BYTES = 1024 * 1024
_MAX_INFLATE = 1024 * 1024  # text inflated from one base64(gzip) run
_WINDOW = 2048
_MIN_B64 = 24  # base64 of an 18-byte secret; the shortest token rule is 20
_MIN_HEX = 32
_SEPARATOR = b"\n"
# Printable ASCII plus tab/newline/CR, deleted to count what is left.
_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_MAX_NON_PRINTABLE = 0.1

# re2 runs these in one linear pass (Python's re tries every position of a
# run-shaped pattern and is several times slower on a 1 MB body).
_B64_RUN = re2.compile(rb"[A-Za-z0-9+/_\-]{%d,}={0,2}" % _MIN_B64)
_HEX_ONLY = re.compile(rb"[0-9a-fA-F]+")
# Escapes are found with bytes.find on their literal start, then checked (a
# JSON body has a backslash in every \n and \"; a regex would stop at each).
_PCT_HIT = (b"%", re.compile(rb"%[0-9A-Fa-f]{2}"))
# A single character class (a lone "%" is left as it is by unquoting): the
# run regex stays a fast loop even over a wholly URL-encoded body.
_PCT_RUN = re.compile(rb"[A-Za-z0-9._~+/=\-%]+")
_PCT_LEFT = _PCT_RUN
_PCT_GROUP = re.compile(rb"(?:%[0-9A-Fa-f]{2})+")
_JSON_HITS = ((b"\\u", re.compile(rb"\\u[0-9a-fA-F]{4}")), (b"\\/", re.compile(rb"\\/")))
_JSON_RUN = re.compile(rb"""(?:[A-Za-z0-9._~+/=:\-]|\\u[0-9a-fA-F]{4}|\\["\\/bfnrt])+""")
# Reversed, an escape's quote comes before its backslash: allow both.
_JSON_LEFT = re.compile(rb"""(?:[A-Za-z0-9._~+/=:\-\\]|"\\)+""")
_B64_TRANSLATE = bytes.maketrans(b"-_", b"+/")


def _spans(
    regex: re2._Regexp,  # type: ignore[name-defined]
    data: bytes,
    pos: int = 0,
    end: int | None = None,
) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each match of an RE2 regex in ``data[pos:end]``,
    as ``finditer`` finds them. The wrapper's ``finditer`` builds a match
    object per match (~2 us, most of the cost on bodies with hundreds of
    runs); this calls RE2's ``Match`` directly."""
    if end is None:
        end = len(data)
    match = getattr(getattr(regex, "_regexp", None), "Match", None)
    if match is None or _UNANCHORED is None:  # another google-re2 layout
        yield from ((m.start(), m.end()) for m in regex.finditer(data, pos, end))
        return
    while pos < end:
        span = match(_UNANCHORED, data, pos, end)[0]
        if span[0] < 0:
            return
        yield span
        pos = span[1] if span[1] > pos else pos + 1  # never stuck on an empty match


_UNANCHORED = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)

# Base64 characters as "a", "=" as itself, every other byte as a space: the
# runs are then found with bytes.find in C, ~40% faster than the RE2 pass,
# which stops at each of the hundreds of runs in a body of source code.
_B64_CLASS = bytes(
    0x61
    if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "+/_-")
    else 0x3D
    if i == 0x3D
    else 0x20
    for i in range(256)
)
_NOT_B64_CLASS = re.compile(rb"[^a]")


def _b64_runs(data: bytes) -> Iterator[tuple[int, int]]:
    """What ``_spans(_B64_RUN, data)`` yields: each maximal run of base64
    characters at least _MIN_B64 long, with up to two ``=`` after it."""
    classes = data.translate(_B64_CLASS)
    needle = b"a" * _MIN_B64
    size = len(classes)
    # The first _MIN_B64 "a"s from where the last run ended are the start
    # of the next long enough run: that run cannot have started earlier.
    pos = classes.find(needle)
    while pos != -1:
        stop = _NOT_B64_CLASS.search(classes, pos + _MIN_B64)
        end = stop.start() if stop is not None else size
        if classes[end : end + 1] == b"=":
            end += 2 if classes[end + 1 : end + 2] == b"=" else 1
        yield pos, end
        pos = classes.find(needle, end)


#: A native run finder (:class:`~bot_bottle.contracts.dlp.RunFinder`'s
#: ``find``), installed by :func:`use_run_finder`; ``None``: find the runs here.
_finder: Callable[[bytes], Runs] | None = None


def use_run_finder(finder: Callable[[bytes], Runs] | None) -> None:
    """Find the base64, spaced-base64 and hex-with-separators runs with
    ``finder`` from now on (``None``: in Python again). The findings are
    the same either way (``tests/test_dlp_native.py``); only the speed differs."""
    global _finder
    _finder = finder


def run_finder() -> Callable[[bytes], Runs] | None:
    """The run finder in use, ``None`` when the runs are found in Python."""
    return _finder


def _re2(pattern: bytes) -> re2._Regexp:  # type: ignore[name-defined]
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # bytes in, byte offsets out
    return re2.compile(pattern, options)


# ASCII text as UTF-16: every other byte NUL (LE first: leftmost wins).
_UTF16_RUN = _re2(rb"(?:[\t\n\r\x20-\x7e]\x00){8,}|(?:\x00[\t\n\r\x20-\x7e]){8,}")
# A word (no whitespace) holding a non-ASCII byte.
_NON_ASCII_WORD = _re2(rb"[^\s]*[\x80-\xff][^\s]*")
# Invisible format characters an agent can sprinkle inside a token.
_INVISIBLE = dict.fromkeys(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x180B, 0x180F),
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        *range(0xFE00, 0xFE10),
        *range(0xE0000, 0xE0080),
    ]
)
_HTML_HIT = (
    b"&",
    re.compile(rb"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)"),
)
_HTML_RUN = re.compile(
    rb"(?:[A-Za-z0-9._~+/=:\-]|&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};))+"
)
_HTML_LEFT = re.compile(rb"[A-Za-z0-9._~+/=:\-&#;]+")
_QP_HIT = (b"=", re.compile(rb"=(?:[0-9A-F]{2}|\r?\n)"))
_QP_RUN = re.compile(rb"(?:[A-Za-z0-9._~+/:\-]|=[0-9A-F]{2}|=\r?\n)+")
_QP_LEFT = re.compile(rb"[A-Za-z0-9._~+/:\-=\r\n]+")
# Hex bytes with separators, \x escapes or 0x literals: 16 bytes or more.
_HEX_SEP_RUN = _re2(
    rb"(?:[0-9a-fA-F]{2}[:\-, ]{1,2}){15,}[0-9a-fA-F]{2}"
    rb"|(?:\\x[0-9a-fA-F]{2}){16,}"
    rb"|(?:0[xX][0-9a-fA-F]{2},?[ ]?){16,}"
)
_HEX_SEP_DROP = re.compile(rb"\\x|0[xX]|[^0-9a-fA-F]")
# A _HEX_SEP_RUN match is made of these bytes only, and is at least
# _MIN_HEX_SEP long (16 bytes of two digits and a separator).
_HEX_SEP_CLASS = bytes(
    0x61 if chr(i) in "0123456789abcdefABCDEFxX\\:-, " else 0x20 for i in range(256)
)
_MIN_HEX_SEP = 16 * 2 + 15


def _hex_sep_in(data: bytes, regions: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """:func:`_hex_sep_runs` over the regions a run finder found."""
    for pos, end in regions:
        yield from _spans(_HEX_SEP_RUN, data, pos, end)


def _hex_sep_runs(data: bytes) -> Iterator[tuple[int, int]]:
    """What ``_spans(_HEX_SEP_RUN, data)`` yields, with RE2 reading only the
    runs of hex and separator bytes long enough to hold a match (found with
    bytes.find on the translated buffer, as _b64_runs does): a match lies
    inside one such run, and the pattern has no anchors or look-around, so
    its matches there are the ones a pass over all of ``data`` finds."""
    classes = data.translate(_HEX_SEP_CLASS)
    needle = b"a" * _MIN_HEX_SEP
    pos = classes.find(needle)
    while pos != -1:
        # pos starts its run: an "a" before it would have been found first.
        end = classes.find(b" ", pos + _MIN_HEX_SEP)
        if end == -1:
            end = len(classes)
        yield from _spans(_HEX_SEP_RUN, data, pos, end)
        pos = classes.find(needle, end)


# Base64 with whitespace inside (at least one separator), chunks of three
# characters or more, and a digit, "+" or "/" somewhere: prose (words of
# letters) is not tried, which is what keeps this view cheap on chat bodies.
_B64_SPACED_RUN = _re2(
    rb"(?:[A-Za-z0-9+/_\-]{3,}(?:[ \t]{1,4}|[ \t]*\r?\n[ \t]*))*"
    rb"[A-Za-z0-9+/_\-]*[0-9+/][A-Za-z0-9+/_\-]*"
    rb"(?:(?:[ \t]{1,4}|[ \t]*\r?\n[ \t]*)[A-Za-z0-9+/_\-]{3,})+={0,2}"
)
_WHITESPACE = b" \t\r\n"
# A token split over a line break: one side at least 8 token characters.
_SPLIT_RUN = _re2(
    rb"[A-Za-z0-9_\-]*[A-Za-z0-9_\-]{8}\r?\n[ \t]*[A-Za-z0-9_\-]+"
    rb"|[A-Za-z0-9_\-]+\r?\n[ \t]*[A-Za-z0-9_\-]{8,}"
)
_DIGIT = re.compile(rb"[0-9]")
_COMMON = frozenset({b"=", b"&"})
_HASH_LIKE = re.compile(rb"[0-9a-fA-F\-]+")
_MIN_KEY_DER = 48  # an Ed25519 PKCS#8 key, the smallest private key encoding
# First bytes of a DER key, an OpenSSH key and each format unpack.kind knows
# (a tar is recognised at offset 257 instead).
_KEY_OR_PACKED_FIRST = frozenset(
    bytes([b]) for b in (0x30, ord("o"), 0x1F, 0x78, ord("B"), 0xFD, 0x28, ord("P"))
)


# Each decoder's run-finding pattern, in one Hyperscan prefilter: a decoder
# whose pattern occurs nowhere in a view is skipped, and the escapes the
# URL, JSON, HTML and quoted-printable decoders start from are located in
# the same pass (instead of a bytes.find loop each), so most bodies pay one
# SIMD pass instead of a regex pass per decoder. The patterns need only
# occur where the decoder's own would (a run of 24 is there if a run of 24
# or more is). Without Hyperscan every decoder runs, gated only by its
# marker byte, with the same result. Hex with separators is not in it: a
# pattern of four separated hex bytes (its full pattern's bounded repeats
# of groups are slower still) cost Hyperscan ~1.7 ms per MB where it did not
# occur (7 us of a 4 KB request's 11), more than finding the long runs of
# hex and separator bytes itself (~0.9 ms per MB, 4 us); the split-line
# pattern is not in it either: Hyperscan is slower on it than RE2 is.
_PCT, _JSON_U, _JSON_SLASH, _B64, _SPACED, _UTF16, _HTML, _QP = range(8)
_GATE = Prefilter(
    [
        _PCT_HIT[1].pattern,
        _JSON_HITS[0][1].pattern,
        _JSON_HITS[1][1].pattern,
        rb"[A-Za-z0-9+/_\-]{%d}" % _MIN_B64,
        _B64_SPACED_RUN.pattern,
        _UTF16_RUN.pattern.replace(b"{8,}", b"{8}"),
        rb"&[#A-Za-z]",  # checked against _HTML_HIT where found
        rb"=[0-9A-F\r\n]",  # and against _QP_HIT
    ],
    # Fixed lengths of the located patterns: where their matches start.
    locate=[3, 6, 2, 0, 0, 0, 2, 2],
)


class _Hits:
    """Which decoders may find something in a buffer (all, without
    Hyperscan), and where the escapes are when that is known."""

    __slots__ = ("found", "positions")

    def __init__(self, data: bytes) -> None:
        result = _GATE.scan(data)
        self.found, self.positions = (None, None) if result is None else result

    def __call__(self, decoder: int) -> bool:
        return self.found is None or decoder in self.found

    def at(
        self, data: bytes, hits: tuple[tuple[bytes, re.Pattern[bytes]], ...], *decoders: int
    ) -> list[list[int] | None] | None:
        """Where each of ``hits`` starts (a located pattern that is looser
        than its hit's check is checked here), or ``None``: look for them."""
        if self.positions is None:
            return None
        return [
            [p for p in self.positions[d] if check.match(data, p)]
            for d, (_, check) in zip(decoders, hits, strict=True)
        ]


@dataclass(frozen=True)
class Segment:
    """``data[start:end]`` of a view decodes ``parent[src_start:src_end]``."""

    start: int
    end: int
    src_start: int
    src_end: int
    encoding: str


@dataclass
class View:
    """Bytes to scan and, for decoded views, where they came from."""

    data: bytes
    parent: View | None = None
    segments: list[Segment] = field(default_factory=list)
    _starts: list[int] = field(default_factory=list)

    def locate(self, start: int, end: int) -> tuple[int, int, tuple[str, ...]]:
        """Map ``[start, end)`` of this view to raw bytes: ``(start, end, encodings)``.

        A match inside a decoded segment maps to the whole encoded run (a
        base64 run has no byte-exact correspondence); ``encodings`` lists the
        decodings undone, outermost first.
        """
        view: View = self
        chain: list[str] = []
        while view.parent is not None:
            i = bisect.bisect_right(view._starts, start) - 1
            seg = view.segments[max(i, 0)]
            chain.append(seg.encoding)
            start, end = seg.src_start, seg.src_end
            view = view.parent
        return start, end, tuple(reversed(chain))


def _printable(data: bytes) -> bool:
    if not data:
        return False
    return len(data.translate(None, _PRINTABLE)) <= len(data) * _MAX_NON_PRINTABLE


def _b64(run: bytes) -> bytes | None:
    run = run.rstrip(b"=").translate(_B64_TRANSLATE)
    if len(run) % 4 == 1:  # one dangling character carries no whole byte
        run = run[:-1]
    if not run:
        return None
    run += b"=" * (-len(run) % 4)
    try:
        return binascii.a2b_base64(run, strict_mode=True)
    except binascii.Error:
        return None


def _inflated(decoded: bytes) -> list[tuple[str, bytes]]:
    """Printable text inside compressed data or an archive (bounded), if any."""
    pieces = unpack(decoded, _MAX_INFLATE, strict=False) or []
    return [(e, c) for e, c in pieces if _printable(c)]


def _der_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """(length, offset of the content) of the DER element whose length byte is at ``pos``."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if not 1 <= n <= 3 or pos + 1 + n > len(data):
        return None
    return int.from_bytes(data[pos + 1 : pos + 1 + n]), pos + 1 + n


# PKCS#5 PBES2/PBES1 and PKCS#12 PBE OIDs: an EncryptedPrivateKeyInfo.
_PBE_OIDS = (
    b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x05",
    b"\x06\x0a\x2a\x86\x48\x86\xf7\x0d\x01\x0c\x01",
)


def private_key_der(data: bytes) -> bool:
    """``data`` is a private key without its PEM armour: an OpenSSH key, or
    a DER SEQUENCE of the whole length that starts like PKCS#1 (RSA), SEC1
    (EC), PKCS#8 (version 0 or 1, then an algorithm or a key) or an
    encrypted PKCS#8 key. Certificates and public keys start otherwise (a
    SEQUENCE, or an algorithm with a public-key OID) and are not matched."""
    if data.startswith(b"openssh-key-v1\x00"):
        return True
    if len(data) < _MIN_KEY_DER or data[0] != 0x30:
        return False
    outer = _der_length(data, 1)
    if outer is None:
        return False
    length, pos = outer
    if not 0 <= len(data) - (pos + length) <= 16:  # padding or a trailing newline
        return False
    body = data[pos : pos + 12]
    if body[:3] in (b"\x02\x01\x00", b"\x02\x01\x01"):
        return body[3:4] in (b"\x02", b"\x04", b"\x30")
    if body[:1] == b"\x30":
        inner = _der_length(data, pos + 1)
        if inner is None:
            return False
        head = data[inner[1] : inner[1] + 12]
        return any(head.startswith(oid) for oid in _PBE_OIDS)
    return False


def _armour(run: bytes) -> bytes:
    body = run.translate(None, _WHITESPACE)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"\n-----END PRIVATE KEY-----"


def _runs_around(
    data: bytes,
    hits: tuple[tuple[bytes, re.Pattern[bytes]], ...],
    run: re.Pattern[bytes],
    left: re.Pattern[bytes],
    located: list[list[int] | None] | None = None,
) -> list[tuple[int, int]]:
    """Maximal ``run`` matches that contain one of the ``hits`` (deduplicated).

    Hits are found with ``bytes.find`` on their literal start, resuming after
    the last run found (a URL-encoded body is one long run of hits), unless
    ``located`` gives each hit's start offsets (sorted) already. The run's
    start is found by matching ``left`` (the run's characters) on the reversed
    bytes before the hit: one C-level match each way per run.
    """
    spans: set[tuple[int, int]] = set()
    for n, (literal, check) in enumerate(hits):
        starts = located[n] if located is not None else None
        if starts is not None:
            resume = 0
            for pos in starts:
                if pos < resume:
                    continue
                span = _run_at(data, pos, run, left)
                resume = pos + 1
                if span is not None:
                    spans.add(span)
                    resume = max(resume, span[1])
            continue
        if literal in _COMMON:
            # A character ordinary text is full of ("=", "&"): let the regex
            # find the real hits in one C-level scan instead.
            found = check.search(data)
            while found is not None:
                span = _run_at(data, found.start(), run, left)
                resume = found.start() + 1
                if span is not None:
                    spans.add(span)
                    resume = max(resume, span[1])
                found = check.search(data, resume)
            continue
        pos = data.find(literal)
        while pos != -1:
            resume = pos + 1
            if check.match(data, pos):
                span = _run_at(data, pos, run, left)
                if span is not None:
                    spans.add(span)
                    resume = max(resume, span[1])
            pos = data.find(literal, resume)
    return sorted(spans)


def _run_at(
    data: bytes, pos: int, run: re.Pattern[bytes], left: re.Pattern[bytes]
) -> tuple[int, int] | None:
    lo = max(0, pos - _WINDOW)
    back = left.match(data[lo:pos][::-1])
    start = pos - (back.end() if back else 0)
    end = min(len(data), pos + _WINDOW)
    m = run.match(data, start, end)
    if m is None or m.end() <= pos:
        # The reversed scan overshot into characters that form no run here
        # (a dangling backslash, a lone %): look at each run.
        m = next((r for r in run.finditer(data, start, end) if r.start() <= pos < r.end()), None)
    return (m.start(), m.end()) if m is not None else None


def _unquote(run: bytes) -> bytes:
    """``urllib.parse.unquote_to_bytes`` of a run (which holds no backslash),
    fast: ``%XX`` becomes ``\\xXX`` and one C call decodes them all (20x
    faster than unquote_to_bytes on a wholly encoded body). A run with a
    lone or malformed ``%`` takes the slower path that leaves those as is."""
    # A run cut at the window's edge may end inside an escape: keep that as is.
    cut = run.rfind(b"%", max(0, len(run) - 2))
    body, tail = (run[:cut], run[cut:]) if cut != -1 else (run, b"")
    if b"\\" not in body:
        try:
            return codecs.escape_decode(body.replace(b"%", b"\\x"))[0] + tail
        except ValueError:
            pass
    return _PCT_GROUP.sub(lambda m: bytes.fromhex(m.group().replace(b"%", b"").decode()), run)


def _decode_json(run: bytes) -> bytes | None:
    try:
        text = json.loads(b'"' + run + b'"')
    except ValueError:
        return None
    return text.encode("utf-8", "surrogatepass") if isinstance(text, str) else None


def _binary_or_text(
    out: list[tuple[int, int, str, bytes]],
    s: int,
    e: int,
    encoding: str,
    run: bytes,
    decoded: bytes,
) -> bool:
    """Keep what a base64 run decodes to if it is worth scanning: text, a
    private key without armour, or text inside compressed data."""
    if _printable(decoded):
        out.append((s, e, encoding, decoded))
        return True
    if decoded[:1] not in _KEY_OR_PACKED_FIRST and decoded[257:262] != b"ustar":
        return False  # neither a key nor compressed: most binary decodings
    if private_key_der(decoded):
        out.append((s, e, "pem-body", _armour(run)))
        return True
    # base64(gzip(secret)) is the classic way to get text past a
    # scanner; compressed payloads are recognised by their header.
    inflated = _inflated(decoded)
    for inner, content in inflated:
        out.append((s, e, f"{encoding}+{inner}", content))
    return bool(inflated)


def _decode_spaced(
    data: bytes,
    out: list[tuple[int, int, str, bytes]],
    may: _Hits,
    matches: list[tuple[int, int]] | None,
) -> None:
    """Base64 with whitespace inside: MIME and PEM line wrapping, or an
    agent's every-few-characters spacing (``matches``: the pattern's matches
    a run finder found, else looked for here)."""
    if matches is not None:
        spans: Iterator[tuple[int, int]] | list[tuple[int, int]] = matches
    elif may(_SPACED):
        spans = _spans(_B64_SPACED_RUN, data)
    else:
        return
    for s, e in spans:
        if e - s <= _MIN_B64:
            continue  # a run holds a separator: too short once joined (most runs in prose)
        run = data[s : min(e, s + MAX_RUN_BYTES)]
        joined = run.translate(None, _WHITESPACE)
        # Prose (letters only) and identifiers are not base64 worth trying.
        if len(joined) < _MIN_B64 or joined.isalpha() or joined.islower() or joined.isupper():
            continue
        if len(joined) >= _MIN_HEX and _HEX_ONLY.fullmatch(joined):
            continue  # hex with spaces is the separator decoder's
        for shift in range(4):
            decoded = _b64(joined[shift:])
            if decoded is not None and _binary_or_text(out, s, e, "base64", joined, decoded):
                break


def _decode_extra(
    data: bytes,
    out: list[tuple[int, int, str, bytes]],
    may: _Hits,
    hex_regions: list[tuple[int, int]] | None,
) -> None:
    """UTF-16, Unicode tricks, HTML entities, quoted-printable, hex with
    separators and tokens split by a line break: each looked for only where
    its marker byte is."""
    if b"\x00" in data and may(_UTF16):
        for s, e in _spans(_UTF16_RUN, data):
            run = data[s:e]
            text = run[0::2] if run[1] == 0 else run[1::2]
            out.append((s, e, "utf-16", text))
    if not data.isascii():
        for s, e in _spans(_NON_ASCII_WORD, data):
            run = data[s:e]
            text = run.decode("utf-8", "surrogateescape").translate(_INVISIBLE)
            try:
                folded = unicodedata.normalize("NFKC", text).encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                continue
            if folded != run:
                out.append((s, e, "unicode", folded))
    if b"&" in data and may(_HTML):
        for s, e in _runs_around(
            data, (_HTML_HIT,), _HTML_RUN, _HTML_LEFT, may.at(data, (_HTML_HIT,), _HTML)
        ):
            text = data[s:e].decode("utf-8", "surrogateescape")
            decoded = html.unescape(text).encode("utf-8", "surrogateescape")
            if decoded != data[s:e]:
                out.append((s, e, "html", decoded))
    if b"=" in data and may(_QP):
        for s, e in _runs_around(
            data, (_QP_HIT,), _QP_RUN, _QP_LEFT, may.at(data, (_QP_HIT,), _QP)
        ):
            decoded = binascii.a2b_qp(data[s:e])
            if decoded != data[s:e] and _printable(decoded):
                out.append((s, e, "qp", decoded))
    hex_runs = _hex_sep_runs(data) if hex_regions is None else _hex_sep_in(data, hex_regions)
    for s, e in hex_runs:
        digits = _HEX_SEP_DROP.sub(b"", data[s : min(e, s + MAX_RUN_BYTES)])
        decoded = binascii.unhexlify(digits[: len(digits) - len(digits) % 2])
        if _printable(decoded):
            out.append((s, e, "hex", decoded))
    if b"\n" in data:
        for s, e in _spans(_SPLIT_RUN, data):
            run = data[s:e]
            if not _DIGIT.search(run):
                continue  # tokens carry digits; prose wrapping does not
            if any(_HASH_LIKE.fullmatch(piece) for piece in run.split()):
                continue  # lines of hashes and UUIDs (lock files, logs)
            joined = run.translate(None, _WHITESPACE)
            out.append((s, e, "joined", joined))


def _decode_b64_run(data: bytes, s: int, e: int, out: list[tuple[int, int, str, bytes]]) -> None:
    """A base64 run (or a run of hex digits) decoded, if worth it."""
    run = data[s : min(e, s + MAX_RUN_BYTES)]
    if len(run) >= _MIN_HEX and _HEX_ONLY.fullmatch(run):
        decoded = binascii.unhexlify(run[: len(run) - len(run) % 2])
        if _printable(decoded):
            out.append((s, e, "hex", decoded))
            return
    # Base64 of text has upper case in every fourth place; identifiers
    # such as snake_case names (all lower case) need not be tried.
    if run.islower() or run.isupper():
        return
    # A run cut by the start of the buffer (a streamed window) may be
    # misaligned; try the other alignments there.
    for shift in range(4) if s == 0 else (0,):
        decoded = _b64(run[shift:])
        if decoded is None:
            continue
        if _binary_or_text(out, s, e, "base64", run, decoded):
            break


# In a buffer shorter than _MIN_B64 no base64, spaced-base64 or hex run fits:
# only the escape-based decodings can apply, each marked by one of these.
_SHORT_MARKER = re.compile(rb"[%\\\x00&\n\x80-\xff]|=(?:[0-9A-F]{2}|\r?\n)")


def decode_runs(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Every encoded run of ``data`` worth scanning decoded:
    ``(start, end, encoding, decoded)``, in order of ``start``."""
    if len(data) < _MIN_B64 and _SHORT_MARKER.search(data) is None:
        return []  # a URL path, a query: too short for a run, and no escape
    out: list[tuple[int, int, str, bytes]] = []
    may = _Hits(data)
    if b"%" in data and may(_PCT):
        for s, e in _runs_around(
            data, (_PCT_HIT,), _PCT_RUN, _PCT_LEFT, may.at(data, (_PCT_HIT,), _PCT)
        ):
            decoded = _unquote(data[s:e])
            out.append((s, e, "url", decoded))
    if b"\\" in data and (may(_JSON_U) or may(_JSON_SLASH)):
        located = may.at(data, _JSON_HITS, _JSON_U, _JSON_SLASH)
        for s, e in _runs_around(data, _JSON_HITS, _JSON_RUN, _JSON_LEFT, located):
            decoded = _decode_json(data[s:e])
            if decoded is not None:
                out.append((s, e, "json", decoded))
    found = _finder(data) if _finder is not None else None
    if found is not None:
        b64_runs: Iterator[tuple[int, int]] | list[tuple[int, int]] = found[0]
    else:
        b64_runs = _b64_runs(data) if may(_B64) else []
    for s, e in b64_runs:
        _decode_b64_run(data, s, e, out)
    _decode_spaced(data, out, may, found[1] if found is not None else None)
    _decode_extra(data, out, may, found[2] if found is not None else None)
    out.sort(key=lambda r: r[0])
    return out


def build_views(
    raw: bytes, max_depth: int = MAX_DEPTH, *, max_unpacked: int = DEFAULT_MAX_DECODED_BYTES
) -> list[View]:
    """View 0 (``raw``) and the decoded views beneath it.

    ``raw`` that starts with a compression or archive magic is unpacked
    first (bounded by ``max_unpacked``; more raises
    :class:`~bot_bottle.dlp.content.UndecodableError`), and the decoded
    views are built from its content.
    """
    views = [View(raw)]
    unpacked = unpack(raw, max_unpacked, strict=True)
    if unpacked:
        view = View(b"", views[0])
        pieces: list[bytes] = []
        pos = 0
        for encoding, content in unpacked:
            view.segments.append(Segment(pos, pos + len(content), 0, len(raw), encoding))
            view._starts.append(pos)
            pieces += (content, _SEPARATOR)
            pos += len(content) + len(_SEPARATOR)
        view.data = b"".join(pieces)
        views.append(view)
    for _ in range(max_depth):
        parent = views[-1]
        runs = decode_runs(parent.data)
        if not runs:
            break
        # Bound the work a hostile body can cause: a view is never larger
        # than twice its parent (each decoding shrinks its run).
        budget = 2 * len(parent.data) + 1024
        pieces = []
        view = View(b"", parent)
        pos = 0
        for s, e, encoding, decoded in runs:
            if pos + len(decoded) > budget:
                break
            view.segments.append(Segment(pos, pos + len(decoded), s, e, encoding))
            view._starts.append(pos)
            pieces.append(decoded)
            pieces.append(_SEPARATOR)
            pos += len(decoded) + len(_SEPARATOR)
        view.data = b"".join(pieces)
        views.append(view)
    return views
