"""The terminal-safe rendering of untrusted text, and the audit log."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot_bottle import audit, termtext

HOSTILE = [
    "\x1b[31m",  # CSI
    "\x1b]52;c;aGk=\x07",  # OSC 52 clipboard write
    "\x9b31m",  # C1 CSI
    "\u202e",  # RLO
    "\u2066",  # LRI
    "\u200b",  # zero-width space
    "\u2060",  # word joiner
    "\ufeff",  # BOM
    "\u00ad",  # soft hyphen
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    "\U000e0041",  # tag LATIN CAPITAL A
    "\r",
    "\x00",
    "\x7f",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_visible_escapes_every_hostile_character(bad: str) -> None:
    shown = termtext.visible(f"a{bad}b")
    assert shown.startswith("a") and shown.endswith("b")
    assert all(not termtext.is_unsafe(c) for c in shown)
    assert "\\" in shown


@pytest.mark.parametrize("bad", HOSTILE)
def test_first_unsafe_finds_every_hostile_character(bad: str) -> None:
    found = termtext.first_unsafe(f"ok {bad} text")
    assert found is not None and found[0] == 3


def test_ordinary_text_passes_unchanged() -> None:
    text = "Install ripgrep: RUN apt-get install -y ripgrep — naïve café 日本語 ✓"
    assert termtext.visible(text) == text
    assert termtext.first_unsafe("line one\nline two\r\n\tindented") is None


def test_emoji_sequences_pass_but_lone_joiners_and_selectors_do_not() -> None:
    for ok in ("👩\u200d💻", "❤\ufe0f", "👍🏽"):
        assert termtext.first_unsafe(ok) is None, ok
    for bad in ("a\u200db", "x\ufe0f", "a\U000e0100"):
        assert termtext.first_unsafe(bad) is not None, bad


def test_newlines_are_escaped_unless_allowed() -> None:
    assert termtext.visible("a\nb") == "a\\x0ab"
    assert termtext.visible("a\nb", allow_newlines=True) == "a\nb"


def test_limit_cuts_with_an_ellipsis() -> None:
    assert termtext.visible("x" * 100, limit=10) == "x" * 9 + "…"
    assert termtext.visible("short", limit=10) == "short"


def test_describe_names_the_character() -> None:
    assert termtext.describe("\u202e") == "U+202E (RIGHT-TO-LEFT OVERRIDE)"


def test_audit_records_are_appended_and_read_back(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit.record("proposal.approve", bottle="b1", proposal="p-1", comment="ok", path=log)
    audit.record("egress.allow", bottle="b1", route={"host": "x.test"}, path=log)
    entries = list(audit.read(path=log))
    assert [e["action"] for e in entries] == ["proposal.approve", "egress.allow"]
    assert entries[0]["comment"] == "ok" and entries[0]["user"]
    assert log.stat().st_mode & 0o077 == 0


def test_audit_read_filters_by_time_and_skips_torn_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit.record("a", path=log)
    with log.open("a") as fh:
        fh.write('{"time": "2020-01-01T00:00:00Z", "action": "old"}\n{"torn": \n')
    audit.record("b", path=log)
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert [e["action"] for e in audit.read(path=log, since=since)] == ["a", "b"]
    assert [e["action"] for e in audit.read(path=log)] == ["a", "old", "b"]


def _append_many(path: str) -> None:
    for i in range(50):
        audit.record("x", path=Path(path), n=i, pad="y" * 2000)


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    procs = [multiprocessing.Process(target=_append_many, args=(str(log),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = log.read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["action"] == "x" for line in lines)


def test_an_unwritable_log_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    with pytest.raises(audit.AuditError, match="cannot write the audit log"):
        audit.record("x", path=target)
