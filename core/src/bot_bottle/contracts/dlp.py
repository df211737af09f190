"""The DLP detector contract: one engine for egress traffic and pushed commits.

Detectors see *decoded* bytes: the scan pipeline (:mod:`bot_bottle.dlp`, not
the detector) undoes Content-Encoding, URL-encoding, base64/hex runs, JSON
escapes and the other decodings of :mod:`bot_bottle.dlp.views` (UTF-16,
invisible characters and NFKC, HTML entities, quoted-printable, split
lines, compressed data and archives) once, before any detector runs, and
calls :meth:`scan` on the raw bytes and on each decoded view. A detector only finds things in
bytes and says where (offsets in the bytes it was given; the pipeline maps
them back to the original and fills in ``Location.decoded``). Use
:func:`redact` to build snippets.

A finding names the detector and the rule and carries a *redacted* snippet:
never the matched secret itself, since findings are logged and shown to
the agent and the operator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from bot_bottle.contracts.common import PluginComponent

if TYPE_CHECKING:
    from bot_bottle.secrets import Secret


class Direction(StrEnum):
    OUTBOUND = "outbound"  # agent -> world: requests, pushed commits
    INBOUND = "inbound"  # world -> agent: responses
    BOTH = "both"

    def covers(self, other: Direction) -> bool:
        return self is Direction.BOTH or self is other


class Action(StrEnum):
    BLOCK = "block"  # 403 for HTTP, rejected push for git
    WARN = "warn"  # logged, traffic continues


@dataclass(frozen=True)
class Location:
    """Where in the scanned thing a finding is.

    ``part`` is one of ``method``, ``url_path``, ``query``, ``header``, ``body``,
    ``commit_message``, ``commit_header`` (author, committer, tagger, any
    other header line of a commit or tag object), ``file_name``,
    ``file_content``, ``ref_name``. ``name`` is the header name or
    file path; ``commit`` and ``line`` are set for git.
    ``offset``/``length`` locate the match in the scanned bytes.
    ``decoded`` names the decodings the scan pipeline undid to find it,
    outermost first (e.g. ``"url>base64"``); the offset then covers the
    whole encoded run.
    """

    part: str
    name: str | None = None
    commit: str | None = None
    line: int | None = None
    offset: int | None = None
    length: int | None = None
    decoded: str | None = None

    def describe(self) -> str:
        bits = [self.part]
        if self.name:
            bits.append(self.name)
        if self.commit:
            bits.append(f"commit {self.commit[:12]}")
        if self.line is not None:
            bits.append(f"line {self.line}")
        if self.decoded:
            bits.append(f"({self.decoded}-encoded)")
        return " ".join(bits)


@dataclass(frozen=True)
class Finding:
    detector: str
    rule: str
    action: Action
    location: Location
    #: A few characters of context with the match replaced, e.g. ``key=[REDACTED:aws]``.
    snippet: str

    def describe(self) -> str:
        return f"{self.detector}/{self.rule} in {self.location.describe()}: {self.snippet}"


def redact(data: bytes, start: int, end: int, label: str, context: int = 8) -> str:
    """A snippet for a finding: up to ``context`` characters either side of
    ``data[start:end]``, the match itself replaced by ``[REDACTED:<label>]``.

    Context is cut at line breaks and non-printable bytes are shown as ``?``.
    """

    def clean(b: bytes) -> str:
        text = b.decode("ascii", "replace")
        return "".join(c if c.isprintable() and c.isascii() else "?" for c in text)

    before = data[max(0, start - context) : start].rsplit(b"\n", 1)[-1]
    after = data[end : end + context].split(b"\n", 1)[0]
    return f"{clean(before)}[REDACTED:{label}]{clean(after)}"


@dataclass(frozen=True)
class ScanContext:
    """What is being scanned, for detectors that care and for findings."""

    direction: Direction
    location: Location
    #: The request's host (egress) or the repo name (git-gate).
    target: str | None = None
    #: The bottle's own secret values (injected tokens, prompted and
    #: interpolated env values), held in memory only.
    known_secrets: tuple[Secret, ...] = ()


class StreamScanner(ABC):
    """Scans a byte stream fed in chunks of any size."""

    @abstractmethod
    def feed(self, chunk: bytes) -> list[Finding]:
        """Scan the next chunk; return findings not reported before."""

    @abstractmethod
    def finish(self) -> list[Finding]:
        """End of stream; return any findings still pending."""


class DlpDetector(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_dlp_detectors``."""

    direction: ClassVar[Direction] = Direction.OUTBOUND
    #: The longest match this detector can produce (for a detector that
    #: pairs matches, the longest span it looks across). Streams keep this
    #: many bytes of carry-over so a match split across chunks is still
    #: found; the scan pipeline keeps the largest of its detectors' values.
    max_match_bytes: ClassVar[int] = 4096

    @abstractmethod
    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        """Scan a whole buffer. Findings' ``location.offset`` and ``length``
        are relative to ``data``. Must be free of side effects and must not
        raise on any input."""

    def stream(self, context: ScanContext) -> StreamScanner:
        """A scanner for chunked input. The default re-runs :meth:`scan` on each
        chunk plus the carried tail of the previous data.

        The scan pipeline (:mod:`bot_bottle.dlp`) does not call this: it
        decodes each window once and calls :meth:`scan` on every decoded
        view, so :meth:`scan` is the one method a detector must get right.
        """
        return CarryOverScanner(self, context)


class CarryOverScanner(StreamScanner):
    """Sliding-window streaming on top of a whole-buffer ``scan``.

    Each window is the last ``max_match_bytes`` of what came before plus the
    new chunk. A match lying wholly inside the carried tail was reported with
    the previous window, so only matches that reach into the new bytes are
    reported; offsets are rebased to the start of the stream.
    """

    def __init__(self, detector: DlpDetector, context: ScanContext) -> None:
        self._detector = detector
        self._context = context
        self._carry = b""
        self._consumed = 0  # bytes of the stream before self._carry
        self._seen: set[tuple[str, str]] = set()

    def feed(self, chunk: bytes) -> list[Finding]:
        if not chunk:
            return []
        window = self._carry + chunk
        carried = len(self._carry)
        fresh: list[Finding] = []
        for finding in self._detector.scan(window, self._context):
            loc = finding.location
            if loc.offset is not None:
                end = loc.offset + (loc.length or 0)
                if end <= carried:
                    continue
                finding = replace(
                    finding, location=replace(loc, offset=self._consumed + loc.offset)
                )
            else:
                # Without offsets, fall back to one report per rule and snippet.
                key = (finding.rule, finding.snippet)
                if key in self._seen:
                    continue
                self._seen.add(key)
            fresh.append(finding)
        keep = self._detector.max_match_bytes
        self._consumed += max(0, len(window) - keep)
        self._carry = window[-keep:] if keep else b""
        return fresh

    def finish(self) -> list[Finding]:
        return []


#: What a :class:`RunFinder` returns: ``(base64_runs, spaced_candidates,
#: hex_sep_regions)``, each a list of ``(start, end)`` in order.
Runs = tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[int, int]]]


class RunFinder(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_dlp_accelerators``: finds the
    runs the decoded views start from (:mod:`bot_bottle.dlp.views`) faster
    than Python does, with the same result.

    :meth:`find` returns the runs the views' Python run finding gives for
    the same bytes, less those the views would decode to nothing (so it
    must know what they decode to): the maximal runs of base64 characters
    at least 24 long with up to two ``=`` after each; the matches of the
    spaced-base64 pattern; the maximal runs of hex digits and separators at
    least 47 long (regions the hex-with-separators pattern is then run
    over). ``tests/test_dlp_native.py``
    checks a finder against the Python one.
    """

    @abstractmethod
    def find(self, data: bytes) -> Runs:
        """The runs of ``data``. Must not raise on any input."""
