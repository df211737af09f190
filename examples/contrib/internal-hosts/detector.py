"""Finds internal host names (``*.corp.example``) leaving the bottle."""

from __future__ import annotations

import re

from bot_bottle.contracts.dlp import Action, DlpDetector, Finding, Location, ScanContext

HOST = re.compile(rb"\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.corp\.example\b")


class InternalHostnameDetector(DlpDetector):
    name = "internal_hostnames"
    description = "internal host names"
    max_match_bytes = 255

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        return [
            Finding(
                detector=self.name,
                rule="corp-hostname",
                action=Action.WARN,
                location=Location(
                    context.location.part, offset=m.start(), length=m.end() - m.start()
                ),
                snippet="[REDACTED:corp-hostname]",
            )
            for m in HOST.finditer(data)
        ]
