"""``prompt_injection``: an inbound tripwire, not a defence.

Two phrase lists: *disclosure* (asking the agent to reveal its prompt,
credentials or environment, or to send data somewhere) and *jailbreak*
(telling it to drop its instructions). Either alone is a ``warn`` -- pages
about prompt injection quote such phrases all the time. Both within
:data:`WINDOW` characters of each other is a ``block``.

Matching is case-insensitive and tolerates any run of whitespace (or JSON
``\\n``/``\\t`` escapes) between words. See the README for what it cannot
catch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import re2

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    ScanContext,
)

#: Characters within which a disclosure and a jailbreak phrase block.
WINDOW = 500
_SNIPPET_MAX = 80

# Phrases as word lists: each space becomes "any whitespace"; alternatives
# are RE2 syntax. Keep them specific: a phrase that appears in ordinary
# documentation warns on every page that contains it.
DISCLOSURE: tuple[str, ...] = (
    r"(?:reveal|print|show|output|repeat|display|dump|leak|disclose|tell me) "
    r"(?:me )?(?:your|the) (?:full |entire |original |initial |hidden )?"
    r"(?:system prompt|instructions|prompt|system message)",
    r"(?:repeat|print|output) (?:the|all) (?:text|words|instructions) above",
    r"what (?:is|are|were) your (?:system prompt|instructions|initial instructions)",
    r"(?:send|post|upload|exfiltrate|email|forward|paste) (?:me |us )?(?:your|the|all|any) "
    r"(?:api keys?|tokens?|credentials|secrets|passwords?|environment variables|env vars|"
    r"ssh keys?|private keys?|\.env(?: file)?)",
    r"(?:print|cat|read|dump|show) (?:the )?(?:contents of )?"
    r"(?:~/\.ssh|~/\.aws|/etc/passwd|\.env\b|\.git-credentials|id_rsa|id_ed25519)",
    r"(?:print|dump|list) (?:all )?(?:your |the )?environment variables",
    r"(?:curl|wget)[^\n]{0,120}\|\s*(?:ba)?sh\b",
)
JAILBREAK: tuple[str, ...] = (
    r"ignore (?:all |any )?(?:of )?(?:the |your )?(?:previous|prior|above|earlier|preceding) "
    r"(?:instructions|directions|prompts?|rules|messages)",
    r"disregard (?:all |any )?(?:of )?(?:the |your )?(?:previous|prior|above|earlier|system) "
    r"(?:instructions|prompts?|rules|guidelines)",
    r"forget (?:all |everything )?(?:of )?(?:your |the )?(?:previous |prior )?"
    r"(?:instructions|rules|you were told|above)",
    r"you are now (?:in )?(?:DAN|developer mode|jailbroken|unrestricted|an unfiltered)",
    r"(?:developer|god|DAN) mode (?:enabled|activated|on)",
    r"do anything now",
    r"(?:new|updated|real) (?:system )?instructions\s*:",
    r"override (?:your|the|all) (?:safety |system )?(?:instructions|rules|guidelines|prompt)",
    r"act as an? (?:unrestricted|unfiltered|jailbroken) ",
    r"(?:without|ignore) (?:any|all) (?:ethical |safety )?(?:restrictions|guidelines|filters)",
    r"</?(?:system|im_start|im_end)>|\[/?INST\]|<\|im_start\|>",
)

_SPACE = rb"(?:\s|\\[nrt])+"


def _compile(phrases: tuple[str, ...], kind: str) -> bytes:
    body = b"|".join(p.encode().replace(b" ", _SPACE) for p in phrases)
    return b"(?P<%s>%s)" % (kind.encode(), body)


def _regex() -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.case_sensitive = False
    return re2.compile(
        _compile(DISCLOSURE, "disclosure") + b"|" + _compile(JAILBREAK, "jailbreak"), options
    )


def _quote(phrase: bytes) -> str:
    text = phrase.decode("utf-8", "replace")
    text = " ".join(text.replace("\\n", " ").replace("\\t", " ").split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return '"' + (text if len(text) <= _SNIPPET_MAX else text[: _SNIPPET_MAX - 1] + "…") + '"'


class PromptInjectionDetector(DlpDetector):
    name = "prompt_injection"
    description = "inbound tripwire: disclosure and jailbreak phrases"
    direction: ClassVar[Direction] = Direction.INBOUND
    # The window plus the longest phrases: a pair split across chunks is found.
    max_match_bytes: ClassVar[int] = WINDOW + 1024

    def __init__(self) -> None:
        self._regex = _regex()
        # re2's Match takes group numbers only (bytes names for a bytes pattern).
        self._disclosure = self._regex.groupindex[b"disclosure"]

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        hits: dict[str, list[tuple[int, int]]] = {"disclosure": [], "jailbreak": []}
        findings: list[Finding] = []
        for m in self._regex.finditer(data):
            kind = "disclosure" if m.start(self._disclosure) != -1 else "jailbreak"
            start, end = m.span()
            hits[kind].append((start, end))
            findings.append(self._finding(f"{kind}-phrase", Action.WARN, data, start, end, context))
        for ds, de in hits["disclosure"]:
            for js, je in hits["jailbreak"]:
                if abs(ds - js) <= WINDOW:
                    start, end = min(ds, js), max(de, je)
                    findings.append(
                        Finding(
                            detector=self.name,
                            rule="disclosure-and-jailbreak",
                            action=Action.BLOCK,
                            location=replace(context.location, offset=start, length=end - start),
                            snippet=f"{_quote(data[ds:de])} near {_quote(data[js:je])}",
                        )
                    )
                    break
        return findings

    def _finding(
        self, rule: str, action: Action, data: bytes, start: int, end: int, ctx: ScanContext
    ) -> Finding:
        return Finding(
            detector=self.name,
            rule=rule,
            action=action,
            location=replace(ctx.location, offset=start, length=end - start),
            snippet=_quote(data[start:end]),
        )
