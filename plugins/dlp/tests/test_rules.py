"""Every token rule against its own fixtures, the way gitleaks tests its rules.

A true positive must be blocked by its rule; a false positive must not be
blocked by any rule. Adding a rule without fixtures fails here too.
"""

from __future__ import annotations

import binascii
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot_bottle.contracts.dlp import Action, Direction, Finding, Location, ScanContext
from bot_bottle_dlp import checks
from bot_bottle_dlp.rules import RULES, Rule
from bot_bottle_dlp.token_patterns import TokenPatternsDetector

CTX = ScanContext(Direction.OUTBOUND, Location("body"))
DETECTOR = TokenPatternsDetector()

TRUE_POSITIVES = [(r.id, tp) for r in RULES for tp in r.tp]
FALSE_POSITIVES = [(r.id, fp) for r in RULES for fp in r.fp]


def _scan(text: str) -> list[Finding]:
    return DETECTOR.scan(text.encode(), CTX)


def test_rule_ids_are_unique() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_ships_both_kinds_of_fixture(rule: Rule) -> None:
    assert rule.tp, f"{rule.id} has no true-positive fixture"
    assert rule.fp, f"{rule.id} has no false-positive fixture"


@pytest.mark.parametrize(("rule_id", "text"), TRUE_POSITIVES)
def test_true_positive_is_blocked_by_its_rule(rule_id: str, text: str) -> None:
    found = [(f.rule, f.action) for f in _scan(text)]
    assert (rule_id, Action.BLOCK) in found, f"missed: {found}"


@pytest.mark.parametrize(("rule_id", "text"), FALSE_POSITIVES)
def test_false_positive_is_not_blocked(rule_id: str, text: str) -> None:
    blocked = [f.rule for f in _scan(text) if f.action is Action.BLOCK]
    assert blocked == [], f"{rule_id} fixture misfired as {blocked}"


@pytest.mark.parametrize(("rule_id", "text"), TRUE_POSITIVES)
def test_snippet_never_holds_the_secret(rule_id: str, text: str) -> None:
    for f in _scan(text):
        m = f.location
        assert m.offset is not None and m.length is not None
        secret = text.encode()[m.offset : m.offset + m.length].decode()
        assert secret not in f.snippet
        assert f"[REDACTED:{rule_id}" in f.snippet or f.rule != rule_id


def test_token_failing_its_checksum_only_warns() -> None:
    good = "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"
    bad = good[:-1] + "X"
    (finding,) = _scan(bad)
    assert (finding.rule, finding.action) == ("github-pat", Action.WARN)
    assert "unverified" in finding.snippet


def test_checksum_is_crc32_of_the_random_part_in_base62() -> None:
    body = b"A" * 30
    crc = binascii.crc32(body)
    digits = b""
    while crc:
        crc, d = divmod(crc, 62)
        digits = (
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[d : d + 1] + digits
        )
    assert checks.base62_crc32_checksum(body + digits.rjust(6, b"0"))
    assert not checks.base62_crc32_checksum(body + b"000000")


def test_matches_in_a_longer_text_are_all_found() -> None:
    text = " and ".join(tp for _, tp in TRUE_POSITIVES)
    blocked = {f.rule for f in _scan(text) if f.action is Action.BLOCK}
    assert blocked == {r.id for r in RULES}


def test_first_scans_from_many_threads_each_find_every_rule() -> None:
    # The alternations are compiled at the first scan (not when the
    # launcher builds the detector to read its direction): scans racing
    # for that first compile must all use the complete rule set.
    text = (" and ".join(tp for _, tp in TRUE_POSITIVES)).encode()
    detector = TokenPatternsDetector(prefilter=False)
    barrier = threading.Barrier(8)

    def scan() -> set[str]:
        barrier.wait()
        return {f.rule for f in detector.scan(text, CTX) if f.action is Action.BLOCK}

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: scan(), range(8)))
    assert results == [{r.id for r in RULES}] * 8


def test_rule_breadth_of_issue_17() -> None:
    """At least 120 kinds, and the ones the issue found undetected."""
    ids = {r.id for r in RULES}
    assert len(ids) >= 120
    named = {
        "sendgrid-api-key", "digitalocean-pat", "shopify-access-token", "databricks-token",
        "vault-service-token", "doppler-token", "linear-api-key", "grafana-cloud-token",
        "grafana-service-account-token", "telegram-bot-token", "azure-storage-connection-string",
        "url-credentials", "database-url-password", "authorization-basic",
        "generic-secret-assignment", "putty-private-key", "private-key",
    }  # fmt: skip
    assert named <= ids, named - ids
