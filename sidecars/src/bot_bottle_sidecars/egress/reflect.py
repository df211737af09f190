"""Reflected credentials: the token egress injected, coming back in the response.

Egress adds a route's credential to each request; an upstream that echoes
request headers (a debugging endpoint, an error page quoting the request,
an "echo" API) would hand the agent the very token the bottle exists to
keep from it. So every response on a route with ``auth`` -- whatever its
inbound DLP settings -- is searched for the token injected *on that
request*: its headers before anything is forwarded, its body as it streams.

The search runs core's scan pipeline (so a gzip/br/zstd/deflate
``Content-Encoding`` is undone, in bounded pieces) with one detector,
:class:`ReflectionDetector`, that matches the token and its common
encodings pre-encoded (verbatim and upper/lower-case, URL-encoded,
JSON-escaped, hex, UTF-16, base64 at all three alignments) in one RE2 pass;
the pipeline's other decoded views are not built (an echo does not choose
its encoding to evade, and every response of an auth route pays for this). A hit cuts the
response like an inbound DLP block and is logged as ``credential-reflected``
(never with the value).

Forwarding holds back the end of a chunk only while it could be the start
of one of those forms (:meth:`ReflectionGuard.hold`), so a token split
across two chunks never half-leaves, and ordinary chunks pass at once.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, cast

import re2

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    Location,
    ScanContext,
    StreamScanner,
    redact,
)
from bot_bottle.dlp.content import DEFAULT_MAX_DECODED_BYTES
from bot_bottle.dlp.pipeline import Headers, ScanPipeline
from bot_bottle.secrets import Secret

DETECTOR = "egress"
RULE = "credential-reflected"
_MIN_FRAGMENT = 8
_CACHE = 16


def forms(token: str) -> list[bytes]:
    """The encodings of ``token`` searched for (lower-cased ones match any case)."""
    raw = token.encode("utf-8")
    out = [
        raw,
        urllib.parse.quote(raw, safe="").encode(),
        urllib.parse.quote_plus(raw, safe="").encode(),
        json.dumps(token)[1:-1].encode(),
        raw.hex().encode(),
        token.encode("utf-16-le"),
        token.encode("utf-16-be"),
    ]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).rstrip(b"=")
        fragment = encoded[-(-shift * 4 // 3) : (shift + len(raw)) * 4 // 3]
        if len(fragment) >= _MIN_FRAGMENT:
            out.append(fragment)
            out.append(fragment.translate(bytes.maketrans(b"+/", b"-_")))
    return list(dict.fromkeys(f for f in out if f))


def _literal(form: bytes) -> bytes:
    return b"".join(bytes([b]) if chr(b).isalnum() and b < 0x80 else b"\\x%02x" % b for b in form)


class ReflectionDetector(DlpDetector):
    """Finds one token in any of its :func:`forms` (alphanumerics in any case)."""

    name = DETECTOR
    description = "the credential egress injected, reflected by the upstream"
    direction: ClassVar[Direction] = Direction.BOTH
    max_match_bytes: ClassVar[int] = 4096

    def __init__(self, token: Secret) -> None:
        self._forms = forms(token.reveal())
        options = re2.Options()
        options.encoding = re2.Options.Encoding.LATIN1
        options.case_sensitive = False
        self.regex: Any = re2.compile(b"|".join(_literal(f) for f in self._forms), options)

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        return [
            Finding(
                detector=self.name,
                rule=RULE,
                action=Action.BLOCK,
                location=replace(context.location, offset=m.start(), length=m.end() - m.start()),
                snippet=redact(data, m.start(), m.end(), RULE),
            )
            for m in self.regex.finditer(data)
        ]


class ReflectionGuard:
    """The pipeline that searches responses for one token, and the hold-back
    rule for streaming them."""

    def __init__(self, token: Secret) -> None:
        detector = self.detector = ReflectionDetector(token)
        # The forms are pre-encoded in the detector: the decoded views (built
        # for an adversary choosing encodings) would cost every response on
        # an auth route, downloads included, a multiple of one pass.
        self.pipeline = ScanPipeline([detector], Direction.INBOUND, decoded_views=False)
        self._prefixes = [f.lower() for f in forms(token.reveal())]
        self._firsts = {f[:1] for f in self._prefixes}
        self._longest = max(len(f) for f in self._prefixes)

    def scan_headers(self, headers: Headers) -> list[Finding]:
        if isinstance(headers, tuple | list):
            # Every response on an auth route comes here; nearly all hold no
            # form of the token. The pipeline scans exactly these bytes
            # (``name: value`` lines, one view, this one detector), so a
            # block the detector's regex does not match has no finding.
            fields = cast("Sequence[tuple[bytes, bytes]]", headers)
            if all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields):
                block = b"".join(k + b": " + v + b"\n" for k, v in fields)
                if self.detector.regex.search(block) is None:
                    return []
        return self.pipeline.scan_response(0, headers, None)

    def stream(self, content_encoding: str | None) -> StreamScanner:
        return self.pipeline.stream(
            Location("body"),
            content_encoding=content_encoding,
            max_decoded_bytes=DEFAULT_MAX_DECODED_BYTES,
        )

    def hold(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` could begin a reflected
        form (those wait for the next chunk)."""
        tail = data[-(self._longest - 1) :].lower() if self._longest > 1 else b""
        for k in range(len(tail), 0, -1):
            piece = tail[-k:]
            if piece[:1] in self._firsts and any(f.startswith(piece) for f in self._prefixes):
                return k
        return 0


class Guards:
    """One :class:`ReflectionGuard` per token value, built on first use."""

    def __init__(self) -> None:
        self._guards: OrderedDict[Secret, ReflectionGuard] = OrderedDict()

    def get(self, token: Secret) -> ReflectionGuard:
        guard = self._guards.get(token)
        if guard is None:
            guard = self._guards[token] = ReflectionGuard(token)
            if len(self._guards) > _CACHE:
                self._guards.popitem(last=False)
        else:
            self._guards.move_to_end(token)
        return guard
