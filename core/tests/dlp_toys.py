"""A toy DLP detector shared by the pipeline tests: finds ``tok_`` + 20 alphanumerics."""

from __future__ import annotations

import re

from bot_bottle.contracts.dlp import Action, DlpDetector, Finding, Location, ScanContext, redact

TOKEN = b"tok_" + b"Q1w2E3r4T5y6U7i8O9p0"


class Tokens(DlpDetector):
    name = "tokens"
    max_match_bytes = 64

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        return [
            Finding(
                self.name,
                "tok",
                Action.BLOCK,
                Location(context.location.part, offset=m.start(), length=m.end() - m.start()),
                redact(data, m.start(), m.end(), "tok"),
            )
            for m in re.finditer(rb"tok_[A-Za-z0-9]{20}", data)
        ]
