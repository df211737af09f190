"""A test DLP detector, installed as a contrib drop-in plugin for git-gate tests.

The hooks run in processes git spawns, so the detector reaches them the way
any installed plugin does: the plugin host loads it from
``$BOT_BOTTLE_HOME/contrib/``. Three token shapes: AWS access key ids,
GitHub personal access tokens and PEM private key headers.
"""

from __future__ import annotations

import re

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.dlp import Action, Direction, DlpDetector, Finding, Location, ScanContext

RULES = {
    "aws-access-key-id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github-token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "private-key": re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
}


class SampleSecretsDetector(DlpDetector):
    name = "testsecrets"
    description = "AWS key ids, GitHub tokens, PEM private keys (tests)"
    direction = Direction.OUTBOUND
    max_match_bytes = 128

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        found: list[Finding] = []
        for rule, pattern in RULES.items():
            for m in pattern.finditer(data):
                before = data[max(0, m.start() - 6) : m.start()].decode("utf-8", "replace")
                found.append(
                    Finding(
                        detector=self.name,
                        rule=rule,
                        action=Action.BLOCK,
                        location=Location(
                            context.location.part,
                            context.location.name,
                            offset=m.start(),
                            length=m.end() - m.start(),
                        ),
                        snippet=f"{before}[REDACTED:{rule}]",
                    )
                )
        return found


@hookimpl
def bot_bottle_register_dlp_detectors() -> list[Registration[DlpDetector]]:
    return [Registration("testsecrets", SampleSecretsDetector, "test token shapes")]
