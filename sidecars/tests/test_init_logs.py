"""init keeps every daemon's output as JSON lines in a log directory, rotated by size."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bot_bottle_sidecars.init import PlanError, parse_plan
from bot_bottle_sidecars.init.logsink import RotatingFile

CHATTY = textwrap.dedent(
    """
    import json, sys, time
    name, count = sys.argv[1], int(sys.argv[2])
    print(json.dumps({"event": "hello", "level": "info", "n": 0}), flush=True)
    print("a plain line on stdout", flush=True)
    print("a traceback-ish line on stderr", file=sys.stderr, flush=True)
    for i in range(count):
        print(json.dumps({"event": "tick", "level": "info", "n": i, "pad": "x" * 200}), flush=True)
    print(json.dumps({"event": "last words", "level": "info"}), end="", flush=True)
    time.sleep(60)
    """
)


def run_init(tmp_path: Path, count: int, max_bytes: int = 4096, keep: int = 2) -> Path:
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY)
    logs = tmp_path / "logs"
    logs.mkdir()
    plan = {
        "grace_seconds": 2,
        "control_socket": None,
        "log_dir": str(logs),
        "log_max_bytes": max_bytes,
        "log_keep": keep,
        "daemons": [
            {"name": "egress", "argv": [sys.executable, str(script), "egress", str(count)]},
            {"name": "supervise", "argv": [sys.executable, str(script), "supervise", "0"]},
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot_bottle_sidecars.init", "--plan", str(tmp_path / "plan.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = "".join(p.read_text() for p in logs.glob("supervise.jsonl*"))
            if "a traceback-ish line" in text:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    # docker logs of the bundle still shows the daemons' lines.
    assert b"a plain line on stdout" in out
    return logs


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_daemon_gets_a_file_of_json_lines_with_its_name(tmp_path: Path) -> None:
    logs = run_init(tmp_path, count=0)
    records = lines(logs / "supervise.jsonl")
    assert all(r["daemon"] == "supervise" and r["timestamp"] for r in records)
    events = [r["event"] for r in records]
    # JSON lines keep their fields; other output is wrapped, stderr included;
    # an unterminated last line is kept when the daemon goes.
    assert events[:3] == ["hello", "a plain line on stdout", "a traceback-ish line on stderr"]
    assert events[-1] == "last words"
    assert records[1]["raw"] is True
    # init's own events are kept beside the daemons'.
    init_events = [r["event"] for r in lines(logs / "init.jsonl")]
    assert "daemon_started" in init_events and "shutdown_started" in init_events
    assert (logs / "supervise.jsonl").stat().st_mode & 0o777 == 0o644


def test_a_chatty_daemon_rotates_and_stays_under_the_cap(tmp_path: Path) -> None:
    logs = run_init(tmp_path, count=400, max_bytes=8192, keep=2)
    files = sorted(p.name for p in logs.glob("egress.jsonl*"))
    assert files == ["egress.jsonl", "egress.jsonl.1", "egress.jsonl.2"]
    assert all((logs / f).stat().st_size <= 8192 for f in files)
    # The newest lines survive, the oldest were dropped with the oldest file.
    newest = [r.get("n") for r in lines(logs / "egress.jsonl")]
    assert lines(logs / "egress.jsonl")[-1]["event"] == "last words"
    assert 399 in newest
    kept = [r.get("n") for f in reversed(files) for r in lines(logs / f)]
    assert 0 not in [n for n in kept if n is not None][:1]


def test_rotation_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "egress.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        RotatingFile(tmp_path, "egress").write(b"{}\n")
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"log_dir": "relative/logs"}, "log_dir must be an absolute path"),
        ({"log_dir": "/var/log/../etc"}, "log_dir must be an absolute path"),
        ({"log_max_bytes": 10}, "log_max_bytes"),
        ({"log_keep": -1}, "log_keep"),
        ({"log_keep": True}, "log_keep"),
    ],
)
def test_bad_log_settings_are_refused(extra: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan({"daemons": [{"name": "egress", "argv": ["x"]}], **extra})


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event": "x", "daemon": "git-gate"}',
        b"{}",
        b'{"a": 1} trailing junk',
        b"\x1b[31mnot json",
        b'{"timestamp": "t", "event": "multi\\nline"}',
    ],
)
def test_every_kept_line_is_one_json_object_named_by_init(raw: bytes) -> None:
    from bot_bottle_sidecars.init.logsink import record

    out = record("egress", raw)
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    obj = json.loads(out)
    # A daemon cannot pass its lines off as another's.
    assert obj["daemon"] == "egress" and obj["timestamp"]
