"""The headless twins of the console, run as a user would (subprocess):
``proposals``, ``audit``, and ``supervise`` without the console installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    EgressRoutePayload,
    SuperviseQueue,
)

SLUG = "dev-1a2b"


def bb(home: Path, *args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{pre}\nfrom bot_bottle.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "BOT_BOTTLE_HOME": str(home)},
        timeout=60,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    state = home / "state" / SLUG
    state.mkdir(parents=True)
    (state / "metadata.json").write_text(
        json.dumps({"slug": SLUG, "agent": "dev", "backend": "docker", "pid": os.getpid()})
    )
    return home


def _queue(home: Path) -> SuperviseQueue:
    return SuperviseQueue(home / "supervise" / SLUG, SLUG)


def _audit(home: Path) -> list[dict[str, object]]:
    path = home / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_list_show_approve_a_capability_block(home: Path) -> None:
    pid = (
        _queue(home)
        .submit(
            CapabilityBlockPayload(dockerfile="RUN apt-get install -y jq\n", justification="jq")
        )
        .id
    )
    listed = bb(home, "proposals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["proposals"]
    assert entry["id"] == pid and entry["bottle"] == SLUG and entry["status"] == "pending"
    shown = bb(home, "proposals", "show", pid)
    assert "+RUN apt-get install -y jq" in shown.stdout
    assert "recorded; applied when this bottle is committed and resumed" in shown.stdout
    ok = bb(home, "proposals", "approve", pid, "--comment", "fine")
    assert ok.returncode == 0, ok.stderr
    assert "committed and resumed" in ok.stdout
    caps = json.loads((home / "state" / SLUG / "capabilities.json").read_text())
    assert caps == [
        {
            "proposal": pid,
            "dockerfile": "RUN apt-get install -y jq\n",
            "approved_at": caps[0]["approved_at"],
            "comment": "fine",
        }
    ]
    response = _queue(home).load_response(pid)
    assert response is not None and response.decision == "approved"
    assert [e["action"] for e in _audit(home)] == ["proposal.approve"]
    assert bb(home, "proposals", "list").stdout.strip() == "no pending proposals"
    assert pid in bb(home, "proposals", "list", "--all").stdout


def test_approve_an_edited_dockerfile(home: Path, tmp_path: Path) -> None:
    pid = (
        _queue(home)
        .submit(
            CapabilityBlockPayload(dockerfile="RUN apt-get install -y jq\n", justification="jq")
        )
        .id
    )
    edited = tmp_path / "Dockerfile.snippet"
    edited.write_text("RUN apt-get install -y jq=1.7*\n")
    ok = bb(home, "proposals", "approve", pid, "--dockerfile-file", str(edited))
    assert ok.returncode == 0, ok.stderr
    caps = json.loads((home / "state" / SLUG / "capabilities.json").read_text())
    assert caps[0]["dockerfile"] == "RUN apt-get install -y jq=1.7*\n"
    bad = tmp_path / "bad"
    bad.write_text("RUN echo \x1b[2J\n")
    pid2 = _queue(home).submit(CapabilityBlockPayload(dockerfile="RUN x\n", justification="x")).id
    refused = bb(home, "proposals", "approve", pid2, "--dockerfile-file", str(bad))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert _queue(home).load_response(pid2) is None


def test_reject_needs_a_comment_and_is_final(home: Path) -> None:
    pid = _queue(home).submit(CapabilityBlockPayload(dockerfile="RUN x\n", justification="x")).id
    blank = bb(home, "proposals", "reject", pid, "--comment", " ")
    assert blank.returncode == 1 and "needs a comment" in blank.stderr
    assert bb(home, "proposals", "reject", pid, "--comment", "no").returncode == 0
    again = bb(home, "proposals", "approve", pid)
    assert again.returncode == 1 and "already rejected" in again.stderr
    assert [e["action"] for e in _audit(home)] == ["proposal.reject"]


def test_an_egress_request_for_a_bottle_not_running_stays_pending(home: Path) -> None:
    pid = _queue(home).submit(EgressRoutePayload(host="pypi.org", justification="pip")).id
    # No Docker bottle of that slug runs: the route cannot be applied.
    r = bb(home, "proposals", "approve", pid)
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr
    assert _queue(home).load_response(pid) is None
    assert _audit(home) == []


def test_unknown_and_malformed_ids(home: Path) -> None:
    r = bb(home, "proposals", "show", "p-20260101T000000Z-000000000000")
    assert r.returncode == 1 and "no proposal" in r.stderr
    r = bb(home, "proposals", "approve", "../../etc/passwd")
    assert r.returncode == 1 and "invalid proposal id" in r.stderr


def test_a_hostile_queue_file_is_reported_escaped(home: Path) -> None:
    _queue(home).submit(CapabilityBlockPayload(dockerfile="RUN x\n", justification="x"))
    bad = home / "supervise" / SLUG / "p-20260101T000000Z-0123456789ab.proposal.json"
    bad.write_text(
        json.dumps({"schema_version": 1, "id": "p-20260101T000000Z-0123456789ab",
                    "bottle_slug": SLUG, "created_at": "2026-01-01T00:00:00Z",
                    "payload": {"dockerfile": "x", "justification": "\x1b]0;pwn\x07\u202e"}})
    )  # fmt: skip
    r = bb(home, "proposals", "list")
    assert r.returncode == 0
    assert "warning:" in r.stderr
    for stream in (r.stdout, r.stderr):
        assert "\x1b" not in stream and "\u202e" not in stream and "\x07" not in stream


def test_audit_prints_and_filters_since(home: Path) -> None:
    log = home / "audit.jsonl"
    log.write_text(
        json.dumps({"time": "2026-01-01T00:00:00.000Z", "user": "op", "action": "old"}) + "\n"
        + json.dumps({"time": "2026-06-01T00:00:00.000Z", "user": "op", "action": "egress.allow",
                      "bottle": SLUG, "route": "x.test", "comment": "\x1b[31mred"}) + "\n"
    )  # fmt: skip
    r = bb(home, "audit")
    assert r.returncode == 0 and "old" in r.stdout and "egress.allow" in r.stdout
    assert "\x1b" not in r.stdout
    r = bb(home, "audit", "--json", "--since", "2026-03-01")
    assert [json.loads(x)["action"] for x in r.stdout.splitlines()] == ["egress.allow"]
    bad = bb(home, "audit", "--since", "yesterday")
    assert bad.returncode == 1 and "hint:" in bad.stderr


def test_supervise_without_the_console_says_how_to_get_it(home: Path) -> None:
    r = bb(home, "supervise", pre="sys.modules['bot_bottle_console'] = None")
    assert r.returncode == 1
    assert "the operator console is not installed" in r.stderr
    assert "bot-bottle-console" in r.stderr and "Traceback" not in r.stderr


def test_core_and_the_headless_commands_work_without_textual(home: Path) -> None:
    _queue(home).submit(CapabilityBlockPayload(dockerfile="RUN x\n", justification="x"))
    r = bb(home, "proposals", "list", pre="sys.modules['textual'] = None")
    assert r.returncode == 0 and SLUG in r.stdout, r.stderr


def test_supervise_without_a_terminal_points_at_the_headless_commands(home: Path) -> None:
    r = bb(home, "supervise")
    assert r.returncode == 1 and "needs a terminal" in r.stderr
    assert "bot-bottle proposals" in r.stderr and "Traceback" not in r.stderr
