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
"""

from __future__ import annotations

import binascii
import bisect
import codecs
import json
import re
import zlib
from dataclasses import dataclass, field

import re2

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


def _inflate(data: bytes) -> bytes | None:
    """Text inside a gzip or zlib stream (bounded), else None."""
    if data[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif len(data) >= 2 and data[0] == 0x78 and (data[0] * 256 + data[1]) % 31 == 0:
        wbits = zlib.MAX_WBITS
    else:
        return None
    try:
        return zlib.decompressobj(wbits).decompress(data, _MAX_INFLATE)
    except zlib.error:
        return None


def _runs_around(
    data: bytes,
    hits: tuple[tuple[bytes, re.Pattern[bytes]], ...],
    run: re.Pattern[bytes],
    left: re.Pattern[bytes],
) -> list[tuple[int, int]]:
    """Maximal ``run`` matches that contain one of the ``hits`` (deduplicated).

    Hits are found with ``bytes.find`` on their literal start, resuming after
    the last run found (a URL-encoded body is one long run of hits). The run's
    start is found by matching ``left`` (the run's characters) on the reversed
    bytes before the hit: one C-level match each way per run.
    """
    spans: set[tuple[int, int]] = set()
    for literal, check in hits:
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


def decode_runs(data: bytes) -> list[tuple[int, int, str, bytes]]:
    """Every encoded run of ``data`` worth scanning decoded:
    ``(start, end, encoding, decoded)``, in order of ``start``."""
    out: list[tuple[int, int, str, bytes]] = []
    if b"%" in data:
        for s, e in _runs_around(data, (_PCT_HIT,), _PCT_RUN, _PCT_LEFT):
            decoded = _unquote(data[s:e])
            out.append((s, e, "url", decoded))
    if b"\\" in data:
        for s, e in _runs_around(data, _JSON_HITS, _JSON_RUN, _JSON_LEFT):
            decoded = _decode_json(data[s:e])
            if decoded is not None:
                out.append((s, e, "json", decoded))
    for m in _B64_RUN.finditer(data):
        s, e = m.start(), m.end()
        run = data[s : min(e, s + MAX_RUN_BYTES)]
        if len(run) >= _MIN_HEX and _HEX_ONLY.fullmatch(run):
            decoded = binascii.unhexlify(run[: len(run) - len(run) % 2])
            if _printable(decoded):
                out.append((s, e, "hex", decoded))
                continue
        # Base64 of text has upper case in every fourth place; identifiers
        # such as snake_case names (all lower case) need not be tried.
        if run.islower() or run.isupper():
            continue
        # A run cut by the start of the buffer (a streamed window) may be
        # misaligned; try the other alignments there.
        for shift in range(4) if s == 0 else (0,):
            decoded = _b64(run[shift:])
            if decoded is None:
                continue
            if _printable(decoded):
                out.append((s, e, "base64", decoded))
                break
            # base64(gzip(secret)) is the classic way to get text past a
            # scanner; compressed payloads are recognised by their header.
            inflated = _inflate(decoded)
            if inflated is not None and _printable(inflated):
                out.append((s, e, "base64+gzip", inflated))
                break
    out.sort(key=lambda r: r[0])
    return out


def build_views(raw: bytes, max_depth: int = MAX_DEPTH) -> list[View]:
    """View 0 (``raw``) and the decoded views beneath it."""
    views = [View(raw)]
    for _ in range(max_depth):
        parent = views[-1]
        runs = decode_runs(parent.data)
        if not runs:
            break
        # Bound the work a hostile body can cause: a view is never larger
        # than twice its parent (each decoding shrinks its run).
        budget = 2 * len(parent.data) + 1024
        pieces: list[bytes] = []
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
