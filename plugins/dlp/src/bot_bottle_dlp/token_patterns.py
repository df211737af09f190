"""``token_patterns``: provider token formats, all rules in one pass.

Every rule in :mod:`bot_bottle_dlp.rules` becomes one branch of a single
RE2 alternation, so a body is read once whatever the number of rules (RE2's
DFA runs in linear time; Python's ``re`` would try every branch at every
position and is ~10x slower here -- see bench/dlp_throughput.py). Rule
checks (entropy, checksums) run only on the few matches.

Where Hyperscan is installed (and once the detector has scanned a few MB,
which pays for compiling the rules), a
:class:`~bot_bottle.dlp.prefilter.Prefilter` of all rules first says which
rules match anywhere in the buffer (one SIMD pass, ~0.5 ms per MB); the
RE2 alternation is then run over only those rules, and not at all when
none match (most bodies). Dropping a rule that
matches nowhere changes no match of a leftmost-first alternation, so the
findings are the same.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import re2

from bot_bottle.contracts.dlp import (
    Action,
    Direction,
    DlpDetector,
    Finding,
    ScanContext,
    redact,
)
from bot_bottle.dlp.prefilter import Prefilter
from bot_bottle_dlp.checks import shannon_entropy
from bot_bottle_dlp.rules import RULES, Rule


def compile_rules(rules: Sequence[Rule]) -> Any:
    """One RE2 regex with a named group ``r<i>`` per rule (and ``s<i>`` for
    its secret part, when the rule names one)."""
    branches = []
    for i, rule in enumerate(rules):
        pattern = rule.pattern.replace(b"(?P<secret>", b"(?P<s%d>" % i)
        branches.append(b"(?P<r%d>%s)" % (i, pattern))
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # bytes in, byte offsets out
    options.max_mem = 256 << 20  # room for the DFA of ~150 rules: stays linear
    return re2.compile(b"|".join(branches), options)


#: A compiled alternation and, per branch, (rule, group, secret group).
_Pass = tuple[Any, list[tuple[Rule, int, int | None]]]
_MAX_SUBSETS = 64
_COMPILE_AFTER = 2 << 20


class TokenPatternsDetector(DlpDetector):
    name = "token_patterns"
    description = "provider token formats (AWS, GitHub, GitLab, Slack, OpenAI, Anthropic, ...)"
    direction: ClassVar[Direction] = Direction.OUTBOUND
    max_match_bytes: ClassVar[int] = 4096  # long JWTs and PEM headers with their body

    def __init__(self, rules: Sequence[Rule] = RULES, *, prefilter: bool = True) -> None:
        self.rules = tuple(rules)
        # Rule indices of each pass: provider rules, then context rules.
        self._pass_rules = (
            tuple(i for i, r in enumerate(self.rules) if not r.context),
            tuple(i for i, r in enumerate(self.rules) if r.context),
        )
        # The full alternations are compiled at the first scan, not here
        # (~50 ms of CPU): the launcher builds every detector only to read
        # its direction, and egress then boots without waiting for them.
        self._full: list[_Pass | None] | None = None
        self._full_lock = threading.Lock()
        # Compiling the rules for Hyperscan takes ~0.4 s: worth it once a
        # few MB have been scanned (egress, a large push), not for one file.
        self._prefilter = (
            Prefilter([r.pattern for r in self.rules], compile_after=_COMPILE_AFTER)
            if prefilter
            else None
        )
        # Alternations of the rule subsets bodies turned out to need.
        self._subsets: OrderedDict[tuple[int, ...], _Pass | None] = OrderedDict()

    @property
    def _passes(self) -> list[_Pass | None]:
        full = self._full
        if full is None:
            with self._full_lock:
                if self._full is None:
                    self._full = [self._compile(ids) for ids in self._pass_rules]
                full = self._full
        return full

    def _compile(self, ids: Sequence[int]) -> _Pass | None:
        if not ids:
            return None
        rules = [self.rules[i] for i in ids]
        regex = compile_rules(rules)
        index = regex.groupindex  # bytes names for a bytes pattern
        groups = [(rule, index[b"r%d" % i], index.get(b"s%d" % i)) for i, rule in enumerate(rules)]
        return regex, groups

    def _subset(self, n: int, hits: frozenset[int]) -> _Pass | None:
        ids = tuple(i for i in self._pass_rules[n] if i in hits)
        if len(ids) * 2 > len(self._pass_rules[n]):
            return self._passes[n]  # most rules: the full pass is as fast
        compiled = self._subsets.get(ids)
        if compiled is None and ids not in self._subsets:
            compiled = self._subsets[ids] = self._compile(ids)
            if len(self._subsets) > _MAX_SUBSETS:
                self._subsets.popitem(last=False)
        else:
            # Another thread may have evicted it meanwhile: it is in hand.
            with contextlib.suppress(KeyError):
                self._subsets.move_to_end(ids)
        return compiled

    def scan(self, data: bytes, context: ScanContext) -> list[Finding]:
        findings: list[Finding] = []
        taken: list[tuple[int, int]] = []  # spans of provider matches
        hits = self._prefilter.matching(data) if self._prefilter is not None else None
        if hits is None:
            passes = self._passes
        elif not hits:
            return findings
        else:
            passes = [self._subset(n, hits) for n in range(len(self._pass_rules))]
        for n, compiled in enumerate(passes):
            if compiled is None:
                continue
            regex, groups = compiled
            for m in regex.finditer(data):
                for rule, group, secret_group in groups:
                    if m.start(group) == -1:
                        continue
                    span = m.span(group)
                    if n == 0:
                        taken.append(span)
                    elif any(s < span[1] and span[0] < e for s, e in taken):
                        break  # a provider rule reported this place
                    start, end = m.span(secret_group) if secret_group else span
                    action = self._judge(rule, data[start:end])
                    if action is not None:
                        findings.append(self._finding(rule, action, data, start, end, context))
                    break
        return findings

    @staticmethod
    def _judge(rule: Rule, secret: bytes) -> Action | None:
        if rule.min_entropy and shannon_entropy(secret) < rule.min_entropy:
            return None
        if rule.check is not None and not rule.check(secret):
            return rule.check_failed
        return rule.action

    def _finding(
        self, rule: Rule, action: Action, data: bytes, start: int, end: int, ctx: ScanContext
    ) -> Finding:
        label = rule.id if action is rule.action else f"{rule.id} (unverified)"
        return Finding(
            detector=self.name,
            rule=rule.id,
            action=action,
            location=replace(ctx.location, offset=start, length=end - start),
            snippet=redact(data, start, end, label),
        )
