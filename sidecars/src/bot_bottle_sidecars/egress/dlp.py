"""The DLP seam of the egress addon.

The addon hands a :class:`TrafficScanner` the parts of each request (before
the credential is injected, so the bottle's own token is never "found") and
feeds response bodies to a :class:`~bot_bottle.contracts.dlp.StreamScanner`
chunk by chunk. :class:`DetectorScanner` implements it with the DLP detector
plugins named in the route's ``dlp`` selection; a decoding pipeline (undoing
URL-, base64-, JSON-escapes) wraps the bytes it passes to detectors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot_bottle.contracts.dlp import (
    Direction,
    DlpDetector,
    Finding,
    Location,
    ScanContext,
    StreamScanner,
)
from bot_bottle.egress.config import DetectorSelection, Route
from bot_bottle.secrets import Secret


@dataclass(frozen=True)
class RequestPart:
    location: Location
    data: bytes


class TrafficScanner(Protocol):
    def scan_request(self, route: Route, parts: Sequence[RequestPart]) -> list[Finding]:
        """Findings for one request's URL, headers and (decoded) body."""
        ...

    def response_scanner(self, route: Route) -> StreamScanner | None:
        """A scanner for the response body, or None when inbound DLP is off."""
        ...

    def wants_request_body(self, route: Route) -> bool:
        """Whether the request body must be buffered for scanning."""
        ...


#: Optional decoding step: given raw bytes, the byte strings to scan (e.g. the
#: input plus its URL-/base64-decoded forms). Default: the bytes as they are.
Decoder = Callable[[bytes], Iterable[bytes]]


def _identity(data: bytes) -> Iterable[bytes]:
    return (data,)


class DetectorScanner:
    """Runs the route's selected detector plugins.

    ``factory(name)`` builds a detector (``PluginHost().create("dlp_detectors", name)``);
    detectors are built once and cached. ``known_secrets`` are the bottle's
    own secret values for detectors that look for them.
    """

    def __init__(
        self,
        factory: Callable[[str], DlpDetector],
        known_secrets: Sequence[Secret] = (),
        decoder: Decoder = _identity,
    ) -> None:
        self._factory = factory
        self._cache: dict[str, DlpDetector] = {}
        self.known_secrets = tuple(known_secrets)
        self._decoder = decoder

    def _detectors(self, names: DetectorSelection, direction: Direction) -> list[DlpDetector]:
        if names is False:
            return []
        out = []
        for name in names:
            det = self._cache.get(name)
            if det is None:
                det = self._cache[name] = self._factory(name)
            if det.direction.covers(direction):
                out.append(det)
        return out

    def preload(self, names: Iterable[str]) -> None:
        """Build the named detectors now, so a broken plugin fails at load time."""
        for name in names:
            if name not in self._cache:
                self._cache[name] = self._factory(name)

    def wants_request_body(self, route: Route) -> bool:
        return bool(self._detectors(route.dlp.outbound_detectors, Direction.OUTBOUND))

    def scan_request(self, route: Route, parts: Sequence[RequestPart]) -> list[Finding]:
        findings: list[Finding] = []
        for det in self._detectors(route.dlp.outbound_detectors, Direction.OUTBOUND):
            for part in parts:
                ctx = ScanContext(Direction.OUTBOUND, part.location, route.host, self.known_secrets)
                for data in self._decoder(part.data):
                    findings.extend(det.scan(data, ctx))
        return findings

    def response_scanner(self, route: Route) -> StreamScanner | None:
        dets = self._detectors(route.dlp.inbound_detectors, Direction.INBOUND)
        if not dets:
            return None
        ctx = ScanContext(Direction.INBOUND, Location("body"), route.host, self.known_secrets)
        return _Fanout([d.stream(ctx) for d in dets])


class _Fanout(StreamScanner):
    def __init__(self, scanners: list[StreamScanner]) -> None:
        self._scanners = scanners

    def feed(self, chunk: bytes) -> list[Finding]:
        return [f for s in self._scanners for f in s.feed(chunk)]

    def finish(self) -> list[Finding]:
        return [f for s in self._scanners for f in s.finish()]
