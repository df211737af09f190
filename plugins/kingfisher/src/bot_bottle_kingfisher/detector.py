"""``kingfisher``: every rule Kingfisher bundles, run in-process.

Kingfisher (``kingfisher-secret-scanner``, import ``kingfisher_sdk``) is a
Rust scanner on vectorscan. Its rules are compiled on first use and cached
on disk (``KF_RULE_CACHE_DIR`` or the user's cache directory): the first
build of a detector takes tens of seconds, later ones about a second.

The pipeline hands it the raw bytes and each decoded view, like any
detector. Kingfisher's own base64 decoding is turned off (the pipeline
does that, and locates what it finds). Credential *validation* (which
calls the provider's API) is never used: a scan never contacts anything.
Findings carry Kingfisher's rule id (``kingfisher.github.1`` and the like)
and a redacted snippet; the secret is never put in a finding.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    ScanContext,
    redact,
)

#: Kingfisher's confidence levels that block; lower ones warn.
_BLOCKING = frozenset({"high", "medium"})


class KingfisherDetector(DlpDetector):
    name = "kingfisher"
    description = "Kingfisher's bundled secret rules (kingfisher-secret-scanner, in-process)"
    direction: ClassVar[Direction] = Direction.OUTBOUND
    max_match_bytes: ClassVar[int] = 4096

    def __init__(self, scanner: Any = None) -> None:
        if scanner is None:
            from kingfisher_sdk import Scanner  # pyright: ignore[reportMissingImports] -- optional, not in the dev venv

            scanner = Scanner(base64=False, dedup=False, redact=True)
        self._scanner = scanner

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        findings: list[Finding] = []
        for f in self._scanner.scan(data):
            loc = f.location
            start, end = int(loc["start_offset"]), int(loc["end_offset"])
            if not 0 <= start < end <= len(data):
                start, end = 0, len(data)
            action = Action.BLOCK if str(f.confidence).lower() in _BLOCKING else Action.WARN
            rule = str(f.rule_id)
            findings.append(
                Finding(
                    detector=self.name,
                    rule=rule,
                    action=action,
                    location=replace(context.location, offset=start, length=end - start),
                    snippet=redact(data, start, end, rule),
                )
            )
        return findings
