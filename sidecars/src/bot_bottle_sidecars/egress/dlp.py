"""The DLP seam of the egress addon: core's scan pipeline, per route.

The addon hands a :class:`TrafficScanner` each request as it was sent (URL,
headers, and the body still carrying its ``Content-Encoding``), *before* the
route's credential is injected, so the bottle's own token is never "found";
response bodies go to a :class:`~bot_bottle.contracts.dlp.StreamScanner`
chunk by chunk, also as received.

:class:`DetectorScanner` runs the route's selected detector plugins through
:class:`bot_bottle.dlp.ScanPipeline`, the same pipeline ``bot-bottle dlp scan``
and git-gate use: it undoes ``Content-Encoding`` (gzip, deflate, br, zstd; a
body that does not decode is a blocking finding), builds the decoded views
(URL-encoding, JSON escapes, base64 and hex runs) and runs every detector on
each, so a token base64-encoded in a JSON body is found like a plain one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from bot_bottle.contracts.dlp import Direction, DlpDetector, Finding, Location, StreamScanner
from bot_bottle.dlp.content import DEFAULT_MAX_DECODED_BYTES
from bot_bottle.dlp.pipeline import Headers, ScanPipeline
from bot_bottle.egress.config import DetectorSelection, Route
from bot_bottle.secrets import Secret


class TrafficScanner(Protocol):
    def wants_request_body(self, route: Route) -> bool:
        """Whether the request body must be buffered for scanning."""
        ...

    def scan_request(
        self, route: Route, method: str, url: str, headers: Headers, body: bytes | None
    ) -> list[Finding]:
        """Findings for one request: URL path, query, headers and body.
        ``body`` is as sent (still compressed per its Content-Encoding)."""
        ...

    def scan_body(self, route: Route, body: bytes, content_encoding: str | None) -> list[Finding]:
        """Findings for a request body alone (its URL and headers were judged
        earlier, with ``scan_request(..., body=None)``); ``body`` as sent."""
        ...

    def scan_message(self, route: Route, data: bytes) -> list[Finding]:
        """Findings for one outbound WebSocket message."""
        ...

    def response_scanner(self, route: Route, content_encoding: str | None) -> StreamScanner | None:
        """A scanner for a response body as received, or None when inbound DLP is off."""
        ...


class DetectorScanner:
    """Runs each route's selected detector plugins through the scan pipeline.

    ``factory(name)`` builds a detector (``PluginHost().create("dlp_detectors", name)``);
    each is built once. A selected detector that scans only the other
    direction is skipped (the host refuses such a selection when it renders
    the config). ``known_secrets`` are the bottle's own secret values (its
    tokens and other secrets), held in memory only, for the ``known_secrets``
    detector.
    """

    def __init__(
        self, factory: Callable[[str], DlpDetector], known_secrets: Sequence[Secret] = ()
    ) -> None:
        self._factory = factory
        self._detectors: dict[str, DlpDetector] = {}
        self._pipelines: dict[tuple[Direction, tuple[str, ...]], ScanPipeline] = {}
        self.known_secrets = tuple(known_secrets)

    def preload(self, names: Iterable[str]) -> None:
        """Build the named detectors now, so a broken plugin fails at load time."""
        for name in names:
            self._detector(name)

    def _detector(self, name: str) -> DlpDetector:
        det = self._detectors.get(name)
        if det is None:
            det = self._detectors[name] = self._factory(name)
            if not det.name:
                det.name = name
        return det

    def pipeline(self, selection: DetectorSelection, direction: Direction) -> ScanPipeline | None:
        """The pipeline of ``selection``'s detectors for ``direction``; None if none."""
        if selection is False:
            return None
        key = (direction, selection)
        pipeline = self._pipelines.get(key)
        if pipeline is None:
            dets = [self._detector(n) for n in selection]
            pipeline = ScanPipeline([d for d in dets if d.direction.covers(direction)], direction)
            self._pipelines[key] = pipeline
        return pipeline if pipeline.detectors else None

    def wants_request_body(self, route: Route) -> bool:
        return self.pipeline(route.dlp.outbound_detectors, Direction.OUTBOUND) is not None

    def scan_request(
        self, route: Route, method: str, url: str, headers: Headers, body: bytes | None
    ) -> list[Finding]:
        pipeline = self.pipeline(route.dlp.outbound_detectors, Direction.OUTBOUND)
        if pipeline is None:
            return []
        return pipeline.scan_request(
            method, url, headers, body, known_secrets=self.known_secrets, target=route.host
        )

    def scan_body(self, route: Route, body: bytes, content_encoding: str | None) -> list[Finding]:
        pipeline = self.pipeline(route.dlp.outbound_detectors, Direction.OUTBOUND)
        if pipeline is None or not body:
            return []
        return pipeline.scan_bytes(
            body,
            Location("body"),
            content_encoding=content_encoding,
            known_secrets=self.known_secrets,
            target=route.host,
        )

    def scan_message(self, route: Route, data: bytes) -> list[Finding]:
        pipeline = self.pipeline(route.dlp.outbound_detectors, Direction.OUTBOUND)
        if pipeline is None:
            return []
        return pipeline.scan_bytes(
            data,
            Location("body", name="websocket"),
            known_secrets=self.known_secrets,
            target=route.host,
        )

    def response_scanner(self, route: Route, content_encoding: str | None) -> StreamScanner | None:
        pipeline = self.pipeline(route.dlp.inbound_detectors, Direction.INBOUND)
        if pipeline is None:
            return None
        return pipeline.stream(
            Location("body"),
            content_encoding=content_encoding,
            known_secrets=self.known_secrets,
            target=route.host,
            # A compressed response inflates at most as far as a whole body
            # may (an identity one streams unbounded): this bounds what a
            # decompression bomb costs; its pieces are scanned as they inflate.
            max_decoded_bytes=DEFAULT_MAX_DECODED_BYTES,
        )
