"""A bottle's kept history: records in time order, follow across a rotation, retention."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot_bottle import history as hist
from bot_bottle.contracts.supervise import CapabilityBlockPayload, Decision, SuperviseQueue


def _line(event: str, ts: str, **kw: object) -> str:
    return json.dumps({"timestamp": ts, "level": "info", "event": event, **kw}) + "\n"


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> hist.BottleHistory:
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path))
    b = hist.BottleHistory.for_slug("demo-abc123")
    b.begin({"slug": "demo-abc123", "agent": "demo"})
    return b


def test_records_merge_daemons_rotations_and_proposals_in_time_order(
    h: hist.BottleHistory,
) -> None:
    logs = h.logs_dir
    (logs / "egress.jsonl.1").write_text(
        _line("old", "2026-01-01T00:00:01.000000Z", daemon="egress")
    )
    (logs / "egress.jsonl").write_text(_line("new", "2026-01-01T00:00:03.000000Z", daemon="egress"))
    (logs / "git-gate.jsonl").write_text(
        _line("push", "2026-01-01T00:00:02.000000Z", daemon="git-gate") + "not json\n"
    )
    queue = SuperviseQueue(h.queue_dir(), h.slug)
    p = queue.submit(CapabilityBlockPayload(dockerfile="RUN true", justification="why"))
    queue.respond(p.id, Decision.APPROVED, comment="ok")
    h.end(queue.directory)
    assert h.ended and (h.proposals_dir / f"{p.id}.response.json").exists()
    assert not queue.directory.exists()
    events = [r["event"] for r in hist.records(h)]
    assert events == ["old", "push", "new", "proposal", "proposal answered"]
    assert [r["event"] for r in hist.records(h, ["egress"])] == ["old", "new"]


def test_follow_reads_new_lines_across_a_rotation_until_the_end(h: hist.BottleHistory) -> None:
    import os

    from bot_bottle.state import StateDir

    StateDir.for_slug(h.slug).create({"slug": h.slug, "pid": os.getpid()})  # running
    path = h.logs_dir / "egress.jsonl"
    path.write_text(_line("before", "2026-01-01T00:00:00.000000Z"))
    got: list[str] = []

    def reader() -> None:
        for rec in hist.follow(h, ["egress"], interval=0.05):
            got.append(rec["event"])

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    with path.open("a") as fh:
        fh.write(_line("one", "2026-01-01T00:00:01.000000Z"))
        fh.write('{"event": "partial')  # completed later: never read half
    time.sleep(0.2)
    with path.open("a") as fh:
        fh.write('", "timestamp": "2026-01-01T00:00:02.000000Z"}\n')
    path.rename(h.logs_dir / "egress.jsonl.1")
    path.write_text(_line("two", "2026-01-01T00:00:03.000000Z"))
    time.sleep(0.2)
    h.end()
    t.join(timeout=5)
    assert not t.is_alive()
    assert got == ["one", "partial", "two"]


def test_cleanup_expires_only_ended_histories_past_the_retention(h: hist.BottleHistory) -> None:
    import os

    from bot_bottle.state import StateDir

    now = datetime.now(UTC)
    # Running (its launcher is alive): never expired, whatever the retention.
    state = StateDir.for_slug(h.slug)
    state.create({"slug": h.slug, "pid": os.getpid()})
    assert hist.expired([h], 0, now=now + timedelta(days=100)) == []
    # Its launcher gone without an end: judged by its newest file.
    state.remove()
    assert hist.expired([h], 7, now=now) == []
    assert hist.expired([h], 7, now=now + timedelta(days=8)) == [h]
    h.end()
    assert hist.expired([h], 7, now=now) == []
    assert hist.expired([h], 7, now=now + timedelta(days=8)) == [h]


@pytest.mark.parametrize("raw", ["-1", "ten"])
def test_a_bad_retention_is_a_clear_error(raw: str) -> None:
    with pytest.raises(hist.HistoryError):
        hist.retention_days(environ={hist.ENV_RETENTION: raw})


def test_slugs_are_validated_before_any_path_is_built() -> None:
    with pytest.raises(hist.HistoryError, match="invalid bottle slug"):
        hist.BottleHistory.for_slug("../../etc")


def test_follow_stops_when_the_launcher_died_without_an_end(h: hist.BottleHistory) -> None:
    # No live launcher (a SIGKILL leaves no ended_at): what is there, then done.
    (h.logs_dir / "egress.jsonl").write_text("")
    assert list(hist.follow(h, interval=0.01)) == []


def test_records_then_follow_lose_and_repeat_nothing(h: hist.BottleHistory) -> None:
    path = h.logs_dir / "egress.jsonl"
    path.write_text(_line("a", "2026-01-01T00:00:01.000000Z"))
    start = hist.snapshot(h)
    # Written between the snapshot and the read: follow's, not records'.
    with path.open("a") as fh:
        fh.write(_line("b", "2026-01-01T00:00:02.000000Z"))
    (h.logs_dir / "git-gate.jsonl").write_text(_line("c", "2026-01-01T00:00:03.000000Z"))
    assert [r["event"] for r in hist.records(h, upto=start)] == ["a"]
    h.end()
    assert [r["event"] for r in hist.follow(h, start=start, interval=0.01)] == ["b", "c"]
