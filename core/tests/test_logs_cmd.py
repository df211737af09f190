"""``bot-bottle logs`` over a kept history: terminal-safe text, JSON, filters, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bot_bottle.history import BottleHistory


def bb(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "bot_bottle.cli", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def _kept(home: Path) -> BottleHistory:
    h = BottleHistory(home / "history" / "demo-1a2b3c")
    h.begin({"slug": "demo-1a2b3c"})
    # What an agent controls (a path) carrying an escape sequence and a bidi override.
    evil = {"timestamp": "2026-01-01T00:00:01Z", "level": "warning", "event": "refused",
            "daemon": "egress", "path": "/x\x1b]0;pwned\x07\u202e"}  # fmt: skip
    (h.logs_dir / "egress.jsonl").write_text(json.dumps(evil) + "\n")
    gate = {"timestamp": "2026-01-01T00:00:02Z", "level": "info", "event": "push scanned",
            "daemon": "git-gate"}  # fmt: skip
    (h.logs_dir / "git-gate.jsonl").write_text(json.dumps(gate) + "\n")
    h.end()
    return h


def test_untrusted_values_are_made_visible_on_a_terminal(tmp_path: Path) -> None:
    _kept(tmp_path)
    out = bb(tmp_path, "logs", "demo-1a2b3c")
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\u202e" not in out.stdout
    assert "refused" in out.stdout and "push scanned" in out.stdout


def test_json_keeps_the_records_and_daemon_filters_them(tmp_path: Path) -> None:
    _kept(tmp_path)
    out = bb(tmp_path, "logs", "demo-1a2b3c", "--json", "--daemon", "gitgate")
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["event"] for r in recs] == ["push scanned"]
    # JSON output is ASCII: a terminal shows escapes as text.
    raw = bb(tmp_path, "logs", "demo-1a2b3c", "--json", "--daemon", "egress").stdout
    assert "\x1b" not in raw and json.loads(raw)["path"].startswith("/x\x1b")


def test_a_bad_slug_or_unknown_bottle_is_a_clear_error(tmp_path: Path) -> None:
    for slug, message in (("../etc", "invalid bottle slug"), ("nope-1", "no logs kept")):
        out = bb(tmp_path, "logs", slug)
        assert out.returncode == 1 and message in out.stderr and "hint: " in out.stderr
        assert "Traceback" not in out.stderr
