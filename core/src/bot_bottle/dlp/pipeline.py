"""The scan pipeline egress and git-gate both call.

One :class:`ScanPipeline` holds the detectors selected for one direction.
For each thing it scans it undoes ``Content-Encoding`` (a body that cannot
be decoded is refused: a ``block`` finding), builds the decoded views
(URL-encoding, JSON escapes, base64 and hex runs, UTF-16, NFKC, HTML
entities, quoted-printable, split lines, archives by magic bytes; see
:mod:`bot_bottle.dlp.views`), runs every detector over the raw bytes and
every decoded view, and maps each finding back to where it is in the
(content-decoded) input::

    pipeline = ScanPipeline.from_host(PluginHost().load(), Direction.OUTBOUND)
    findings = pipeline.scan_request("POST", url, headers, body, known_secrets=secrets)
    if verdict(findings) is Verdict.BLOCK:
        ...  # 403 naming f.describe() for each finding

For bodies that arrive in pieces, :meth:`ScanPipeline.stream` gives a
:class:`~bot_bottle.contracts.dlp.StreamScanner` that keeps a carry-over
window, so a match split across two chunks is still found.

A detector that raises is reported as a ``block`` finding (fail closed);
its exception text is not shown, as it may quote the scanned data.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, cast

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    Location,
    RunFinder,
    ScanContext,
    StreamScanner,
)
from bot_bottle.dlp.content import (
    DEFAULT_MAX_DECODED_BYTES,
    ContentDecoder,
    UndecodableError,
    decode_content,
    parse_content_encoding,
)
from bot_bottle.dlp.views import View, build_views, use_run_finder
from bot_bottle.errors import BotBottleError, PluginError

if TYPE_CHECKING:
    from bot_bottle.plugins import PluginHost
    from bot_bottle.secrets import Secret

#: The ``detector`` of findings the pipeline itself makes (undecodable body).
PIPELINE = "dlp"
_MIN_CARRY = 256
_MAX_CARRY = 64 * 1024

#: A mapping, or (name, value) pairs as str or bytes -- mitmproxy's
#: ``headers.fields`` (all values of repeated headers) works as is.
Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
Selection = Sequence[str] | Literal[False] | None

#: Methods that cannot carry anything: not worth a scan on every request.
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)


class Verdict(StrEnum):
    BLOCK = "block"
    WARN = "warn"
    NONE = "none"


def verdict(findings: Iterable[Finding]) -> Verdict:
    """``block`` if any finding blocks, else ``warn`` if there are any, else ``none``."""
    result = Verdict.NONE
    for f in findings:
        if f.action is Action.BLOCK:
            return Verdict.BLOCK
        result = Verdict.WARN
    return result


def use_accelerator(host: PluginHost) -> RunFinder | None:
    """Find the decoded views' runs with the first available run finder a
    plugin offers (``bot_bottle_register_dlp_accelerators``), for every scan
    in this process; ``None`` (the views find them in Python) when there is
    none or none is available. Findings are the same either way."""
    for component in host.components("dlp_accelerators"):
        try:
            finder = host.create("dlp_accelerators", component.name)
            if isinstance(finder, RunFinder) and finder.is_available().ok:
                use_run_finder(finder.find)
                return finder
        except Exception:  # noqa: S112 -- an accelerator is optional: the Python path is the same scan
            continue
    use_run_finder(None)
    return None


def load_detectors(
    host: PluginHost, direction: Direction, selection: Selection = None
) -> list[DlpDetector]:
    """The detectors a route selects for ``direction``.

    ``selection`` is the route's ``dlp.outbound_detectors`` /
    ``inbound_detectors``: ``None`` (not set) means every installed detector
    that scans this direction (a name two plugins register, or a detector
    plugin that failed, is then an error: the set would be silently
    smaller); ``False`` means none; a list names them (an unknown or
    conflicting name, or a detector for the other direction, is an error).
    """
    if selection is False:
        return []
    use_accelerator(host)
    if selection is None:
        # The default set is every installed detector: refuse when one is
        # missing (a name conflict, a plugin that failed) rather than scan less.
        host.require_family("dlp_detectors")
        names = [c.name for c in host.components("dlp_detectors")]
    else:
        names = list(dict.fromkeys(selection))
    detectors: list[DlpDetector] = []
    for name in names:
        detector = host.create("dlp_detectors", name)
        if not isinstance(detector, DlpDetector):
            raise PluginError(
                f"dlp detector {name!r} is not a DlpDetector (got {type(detector).__name__})",
                hint="fix or disable the plugin that registers it",
            )
        if not detector.name:
            detector.name = name
        if detector.direction.covers(direction):
            detectors.append(detector)
        elif selection is not None:
            raise BotBottleError(
                f"dlp detector {name!r} scans {detector.direction.value} traffic, "
                f"not {direction.value}",
                hint=f"select it for {detector.direction.value} scans "
                f"(dlp.{detector.direction.value}_detectors, or --direction "
                f"{detector.direction.value} with 'bot-bottle dlp scan')",
            )
    return detectors


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        # Undecodable bytes survive the round trip back to bytes for scanning.
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _header_items(headers: Headers) -> list[tuple[str, str]]:
    if isinstance(headers, Mapping):
        mapping = cast("Mapping[str, str]", headers)
        return [(_text(k), _text(v)) for k, v in mapping.items()]
    return [(_text(k), _text(v)) for k, v in headers]


class ScanPipeline:
    """Decode once, run the selected detectors, locate the findings.

    ``max_decoded_bytes`` bounds a whole body after ``Content-Encoding`` is
    undone; a larger one is refused (use :meth:`stream` for big bodies).
    ``decoded_views=False`` runs the detectors on the (content-decoded) bytes
    only, for detectors that look for pre-encoded forms themselves.
    """

    def __init__(
        self,
        detectors: Sequence[DlpDetector],
        direction: Direction,
        *,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        decoded_views: bool = True,
    ) -> None:
        self.detectors = list(detectors)
        self.direction = direction
        self.max_decoded_bytes = max_decoded_bytes
        self.decoded_views = decoded_views
        longest = max((d.max_match_bytes for d in self.detectors), default=0)
        #: Bytes of carry-over a stream keeps between chunks.
        self.carry_bytes = min(max(longest, _MIN_CARRY), _MAX_CARRY)

    @classmethod
    def from_host(
        cls, host: PluginHost, direction: Direction, selection: Selection = None
    ) -> ScanPipeline:
        """A pipeline of the detectors ``selection`` names (see :func:`load_detectors`)."""
        return cls(load_detectors(host, direction, selection), direction)

    # -- whole buffers ---------------------------------------------------------

    def scan_bytes(
        self,
        data: bytes,
        location: Location,
        *,
        content_encoding: str | None = None,
        known_secrets: Sequence[Secret] = (),
        target: str | None = None,
    ) -> list[Finding]:
        """Scan one whole buffer (a body, a file, a commit message).

        Offsets and line numbers in the findings refer to ``data`` after its
        ``content_encoding`` (a ``Content-Encoding`` header value) is undone.
        """
        if not self.detectors:
            return []
        try:
            data = decode_content(
                data, parse_content_encoding(content_encoding), self.max_decoded_bytes
            )
        except UndecodableError as exc:
            return [_undecodable(location, exc)]
        findings = self._scan(data, location, known_secrets, target)
        return [_with_line(f, data) for f in findings]

    def scan_request(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: bytes | None,
        *,
        known_secrets: Sequence[Secret] = (),
        target: str | None = None,
    ) -> list[Finding]:
        """Scan an HTTP request: URL path, query, every header, and the body.

        ``body`` is the body *as sent*, still compressed (mitmproxy's
        ``raw_content``, not ``content``): it is decoded here per the
        ``Content-Encoding`` header, and a body that does not decode is a
        block. Header findings are located in the line ``"Name: value"``.
        ``method`` is scanned unless it is a standard one: HTTP/1.1 takes any
        token as a method, and proxies forward it. Scan before the route's
        credential is injected, or the injected token is found among the
        known secrets.
        """
        if not self.detectors:
            return []
        parts = urllib.parse.urlsplit(url)
        target = target or parts.hostname
        findings: list[Finding] = []
        if method.upper() not in _STANDARD_METHODS:
            findings += self._scan(method.encode(), Location("method"), known_secrets, target)
        if parts.path:
            findings += self._scan(parts.path.encode(), Location("url_path"), known_secrets, target)
        if parts.query:
            findings += self._scan(parts.query.encode(), Location("query"), known_secrets, target)
        findings += self._scan_headers(headers, known_secrets, target)
        if body:
            findings += self.scan_bytes(
                body,
                Location("body"),
                content_encoding=_get(headers, "content-encoding"),
                known_secrets=known_secrets,
                target=target,
            )
        return findings

    def scan_response(
        self,
        status: int,
        headers: Headers,
        body: bytes | None,
        *,
        known_secrets: Sequence[Secret] = (),
        target: str | None = None,
    ) -> list[Finding]:
        """Scan an HTTP response's headers and body; ``body`` as received,
        decoded here per its ``Content-Encoding`` (see :meth:`scan_request`).
        ``status`` is not scanned."""
        del status
        if not self.detectors:
            return []
        findings = self._scan_headers(headers, known_secrets, target)
        if body:
            findings += self.scan_bytes(
                body,
                Location("body"),
                content_encoding=_get(headers, "content-encoding"),
                known_secrets=known_secrets,
                target=target,
            )
        return findings

    def redact(self, data: bytes, *, known_secrets: Sequence[Secret] = ()) -> bytes:
        """``data`` with everything the detectors find replaced by
        ``[REDACTED:<rule>]`` (an encoded run holding a secret is replaced
        whole), for logging URLs, headers or bodies. No Content-Encoding is
        undone here: pass decoded bytes."""
        if not self.detectors or not data:
            return data
        spans = sorted(
            (f.location.offset, f.location.offset + (f.location.length or 0), f.rule)
            for f in self._scan(data, Location("log"), known_secrets, None)
            if f.location.offset is not None
        )
        out: list[bytes] = []
        pos = 0
        for start, end, rule in spans:
            if end <= pos:
                continue  # inside a span already replaced
            out.append(data[pos : max(pos, start)])
            out.append(b"[REDACTED:%s]" % rule.encode())
            pos = end
        out.append(data[pos:])
        return b"".join(out)

    # -- streams ---------------------------------------------------------------

    def stream(
        self,
        location: Location,
        *,
        content_encoding: str | None = None,
        known_secrets: Sequence[Secret] = (),
        target: str | None = None,
        max_decoded_bytes: int | None = None,
    ) -> StreamScanner:
        """A scanner for a body fed in chunks (``feed`` then ``finish``).

        Chunks are content-decoded as they come; each window scanned is the
        last :attr:`carry_bytes` of what came before plus the new bytes, so a
        match split across chunks is found, once. Offsets are from the start
        of the decoded stream, and a finding reported by ``feed`` may begin in
        bytes fed earlier (a caller that forwards chunks as they pass should
        hold back the last :attr:`carry_bytes`, or accept that the start of a
        split secret has already left). An undecodable stream yields one
        ``block`` finding and nothing after it. Each ``feed`` rescans the
        carry-over, so feed chunks of some kilobytes, not single bytes.

        Content-decoded output is scanned in pieces of about 1 MiB as it is
        inflated, so memory stays bounded whatever a chunk inflates to.
        ``max_decoded_bytes`` bounds the decoded total of a *compressed*
        stream (a larger one is refused like an undecodable one; ``None``: no
        bound), which also bounds the work a decompression bomb can cause.
        """
        return _PipelineStream(
            self, location, content_encoding, tuple(known_secrets), target, max_decoded_bytes
        )

    # -- internals ---------------------------------------------------------------

    def _scan_headers(
        self, headers: Headers, known_secrets: Sequence[Secret], target: str | None
    ) -> list[Finding]:
        # One buffer for all headers (one detector call, not one per header);
        # each finding is then attributed to the header it lies in.
        items = _header_items(headers)
        if not items:
            return []
        starts: list[tuple[int, int, str]] = []
        pieces: list[bytes] = []
        pos = 0
        for name, value in items:
            # The name is scanned too: an agent controls both.
            raw = f"{name}: {value}".encode("utf-8", "surrogateescape")
            starts.append((pos, pos + len(raw), name))
            pieces.append(raw + b"\n")
            pos += len(raw) + 1
        block = b"".join(pieces)
        findings = []
        for f in self._scan(block, Location("header"), known_secrets, target):
            offset = f.location.offset or 0
            for start, end, name in starts:
                if start <= offset <= end:
                    loc = replace(f.location, name=name, offset=offset - start)
                    findings.append(replace(f, location=loc))
                    break
        return findings

    def _scan(
        self,
        data: bytes,
        location: Location,
        known_secrets: Sequence[Secret],
        target: str | None,
    ) -> list[Finding]:
        """Run every detector over every view of ``data``; offsets are in ``data``."""
        context = ScanContext(self.direction, location, target, tuple(known_secrets))
        accepted: list[tuple[str, str, int, int]] = []
        out: list[Finding] = []
        try:
            views = (
                build_views(data, max_unpacked=self.max_decoded_bytes)
                if self.decoded_views
                else [View(data)]
            )
        except UndecodableError as exc:
            return [_undecodable(location, exc)]
        for view in views:
            if not view.data:
                continue
            located: list[tuple[int, int, tuple[str, ...], Finding]] = []
            for detector in self.detectors:
                for f in _run(detector, view.data, context):
                    o = f.location.offset
                    if o is None:
                        # No offset: the finding is somewhere in the buffer.
                        start, end = 0, len(data)
                        chain = ("decoded",) if view.parent is not None else ()
                    else:
                        start, end, chain = view.locate(o, o + (f.location.length or 0))
                    located.append((start, end, chain, f))
            # Narrowest first: two decodings of one place (a base64 run, and
            # the same run with the word before it as whitespace-broken
            # base64) report the run that holds the match, once.
            located.sort(key=lambda item: item[1] - item[0])
            for start, end, chain, f in located:
                # The same match found again in a decoded view of a run
                # that holds it (a URL-encoded run around a plain token,
                # a known secret matched pre-encoded and decoded) is one
                # finding, not two.
                if any(
                    d == f.detector and r == f.rule and start <= s0 and e0 <= end
                    for d, r, s0, e0 in accepted
                ):
                    continue
                accepted.append((f.detector, f.rule, start, end))
                loc = replace(
                    location,
                    offset=start,
                    length=end - start,
                    decoded=">".join(chain) if chain else location.decoded,
                )
                out.append(replace(f, location=loc))
        out.sort(key=lambda f: f.location.offset or 0)
        return out


def _run(detector: DlpDetector, data: bytes, context: ScanContext) -> list[Finding]:
    try:
        return list(detector.scan(data, context))
    except Exception as exc:
        # The contract says scan must not raise; one that does fails closed.
        from bot_bottle.log import get_logger

        get_logger("bot_bottle.dlp").warning(
            "dlp detector raised", detector=detector.name, error=type(exc).__name__
        )
        return [
            Finding(
                detector=detector.name,
                rule="detector-error",
                action=Action.BLOCK,
                location=context.location,
                snippet=f"the detector raised {type(exc).__name__}; refused to be safe",
            )
        ]


def _undecodable(location: Location, exc: UndecodableError) -> Finding:
    return Finding(
        detector=PIPELINE,
        rule="undecodable-body",
        action=Action.BLOCK,
        location=location,
        snippet=exc.message,
    )


def _with_line(f: Finding, data: bytes) -> Finding:
    if f.location.offset is None or f.location.line is not None:
        return f
    line = data.count(b"\n", 0, f.location.offset) + 1
    return replace(f, location=replace(f.location, line=line))


def _get(headers: Headers, name: str) -> str | None:
    values = [v for k, v in _header_items(headers) if k.lower() == name]
    return ", ".join(values) if values else None


class _PipelineStream(StreamScanner):
    def __init__(
        self,
        pipeline: ScanPipeline,
        location: Location,
        content_encoding: str | None,
        known_secrets: tuple[Secret, ...],
        target: str | None,
        max_decoded_bytes: int | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._location = location
        self._secrets = known_secrets
        self._target = target
        self._carry = b""
        self._consumed = 0  # stream bytes before self._carry
        self._reported: set[tuple[str, str, int]] = set()
        self._done = not pipeline.detectors
        self._decoder: ContentDecoder | None = None
        self._pending_error: UndecodableError | None = None
        try:
            codings = parse_content_encoding(content_encoding)
        except UndecodableError as exc:
            self._pending_error = exc
            codings = ()
        if codings:
            self._decoder = ContentDecoder(codings, max_decoded_bytes)

    def _refuse(self, exc: UndecodableError) -> list[Finding]:
        self._done = True
        return [_undecodable(self._location, exc)]

    def feed(self, chunk: bytes) -> list[Finding]:
        if self._done:
            return []
        if self._pending_error is not None:
            return self._refuse(self._pending_error)
        if self._decoder is None:
            return self._window(chunk)
        found: list[Finding] = []
        try:
            # Piece by piece as it inflates: a bomb is never held whole.
            self._decoder.feed_each(chunk, lambda piece: found.extend(self._window(piece)))
        except UndecodableError as exc:
            return found + self._refuse(exc)
        return found

    def finish(self) -> list[Finding]:
        if self._done:
            return []
        if self._pending_error is not None:
            return self._refuse(self._pending_error)
        found: list[Finding] = []
        try:
            if self._decoder is not None:
                self._decoder.finish_each(lambda piece: found.extend(self._window(piece)))
        except UndecodableError as exc:
            return found + self._refuse(exc)
        self._done = True
        return found

    def _window(self, data: bytes) -> list[Finding]:
        if not data:
            return []
        window = self._carry + data
        carried = len(self._carry)
        fresh: list[Finding] = []
        for f in self._pipeline._scan(window, self._location, self._secrets, self._target):
            loc = f.location
            offset = loc.offset or 0
            if offset + (loc.length or 0) <= carried:
                continue  # wholly in the carry-over: reported with the last window
            absolute = self._consumed + offset
            key = (f.detector, f.rule, absolute)
            if key in self._reported:
                continue
            self._reported.add(key)
            fresh.append(replace(f, location=replace(loc, offset=absolute)))
        keep = self._pipeline.carry_bytes
        self._consumed += max(0, len(window) - keep)
        self._carry = window[-keep:]
        return fresh
