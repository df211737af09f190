"""A DLP detector implementing the core contract."""

from __future__ import annotations

import re

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    Location,
    ScanContext,
)

TOKEN = re.compile(rb"\bacme_[0-9A-Za-z]{32}\b")


class AcmeTokenDetector(DlpDetector):
    name = "acme_tokens"
    description = "ACME Corp API tokens"
    direction = Direction.OUTBOUND
    max_match_bytes = 64

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        findings = []
        for m in TOKEN.finditer(data):
            before = data[max(0, m.start() - 8) : m.start()].decode("utf-8", "replace")
            after = data[m.end() : m.end() + 8].decode("utf-8", "replace")
            findings.append(
                Finding(
                    detector=self.name,
                    rule="acme-api-token",
                    action=Action.BLOCK,
                    location=Location(
                        context.location.part,
                        context.location.name,
                        offset=m.start(),
                        length=m.end() - m.start(),
                    ),
                    snippet=f"{before}[REDACTED:acme-api-token]{after}",
                )
            )
        return findings
