"""Snapshot records, the policy diff, live routes and the commit scan (no
engine; the real-bottle cycle is tests/test_snapshots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_bottle import snapshots
from bot_bottle.errors import BotBottleError
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret
from bot_bottle.state import StateDir


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path))
    return tmp_path


def _record(name: str = "snap1", **kw: object) -> snapshots.SnapshotRecord:
    fields: dict[str, object] = {
        "name": name,
        "agent": "demo",
        "bottle": {"name": "demo", "chain": ["demo"], "agent_provider": {"template": "shell"}},
        "provider": "shell",
        "backend": "docker",
        "image": "sha256:" + "a" * 64,
        "created_at": "2026-12-04T10:00:00+00:00",
        "source_slug": "demo-abc123",
        **kw,
    }
    return snapshots.SnapshotRecord.model_validate(fields)


def test_records_round_trip_atomically_and_list_sorted(home: Path) -> None:
    snapshots.save_record(_record("b"))
    path = snapshots.save_record(_record("a", parent="b", credentials=["TOK"]))
    assert path == home / "snapshots" / "a.json"
    assert [r.name for r in snapshots.all_records()] == ["a", "b"]
    again = snapshots.load_record("a")
    assert again.parent == "b" and again.credentials == ["TOK"]
    # No temporary file is left next to the records.
    assert sorted(p.name for p in (home / "snapshots").iterdir()) == ["a.json", "b.json"]
    snapshots.remove_record("a")
    assert not snapshots.has_record("a") and snapshots.has_record("b")


def test_a_broken_record_is_skipped_in_the_list_and_reported_by_name(home: Path) -> None:
    snapshots.save_record(_record("ok"))
    (home / "snapshots" / "broken.json").write_text("{not json")
    assert [r.name for r in snapshots.all_records()] == ["ok"]
    with pytest.raises(BotBottleError, match="cannot read snapshot record"):
        snapshots.load_record("broken")
    with pytest.raises(BotBottleError, match="no snapshot called 'missing'"):
        snapshots.load_record("missing")


@pytest.mark.parametrize("name", ["", "Upper", "a/b", "../x", ".hidden", "x" * 64, "a b"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(BotBottleError, match="not a valid snapshot name"):
        snapshots.check_name(name)


def test_manifest_diff_names_each_changed_leaf() -> None:
    old = {"supervise": True, "egress": {"routes": [{"host": "a"}], "log": "blocks"}}
    new = {"supervise": False, "egress": {"routes": [{"host": "b"}], "log": "blocks"}, "x": 1}
    assert snapshots.manifest_diff(old, new) == [
        'egress.routes: [{"host": "a"}] -> [{"host": "b"}]',
        "supervise: true -> false",
        "x: null -> 1",
    ]
    assert snapshots.manifest_diff(old, old) == []


def test_capabilities_are_read_from_the_state_dir(home: Path) -> None:
    state = StateDir.for_slug("demo-abc123")
    state.path.mkdir(parents=True)
    assert snapshots.read_capabilities(state) == []
    entry = {"proposal": 3, "dockerfile": "RUN true", "approved_at": "t", "comment": None}
    (state.path / snapshots.CAPABILITIES).write_text(json.dumps([entry]))
    (cap,) = snapshots.read_capabilities(state)
    assert cap.proposal == 3 and cap.dockerfile == "RUN true"
    (state.path / snapshots.CAPABILITIES).write_text(json.dumps({"not": "a list"}))
    with pytest.raises(BotBottleError, match="not a JSON list"):
        snapshots.read_capabilities(state)


def test_capability_dockerfile_runs_the_snippets_as_root_then_returns_to_the_user() -> None:
    caps = [snapshots.Capability(proposal="p1", dockerfile="RUN apt-get -y install jq\n",
                                 approved_at="t")]  # fmt: skip
    text = snapshots.capability_dockerfile(caps, "agent")
    lines = text.splitlines()
    assert lines[:2] == ["ARG BASE_IMAGE", "FROM ${BASE_IMAGE}"]
    assert lines.index("USER root") < lines.index("RUN apt-get -y install jq")
    assert lines[-1] == "USER agent"


def test_live_routes_come_from_the_rendered_config_or_the_preserved_copy(home: Path) -> None:
    state = StateDir.for_slug("demo-abc123")
    assert snapshots.live_routes(state) is None
    live = state.run_dir / "etc" / "egress" / "egress.json"
    live.parent.mkdir(parents=True)
    live.write_text(json.dumps({"version": 1, "routes": [{"host": "api.example.com"}]}))
    assert snapshots.live_routes(state) == [{"host": "api.example.com"}]
    state.keep_routes()
    state.preserve("agent exited with 1")
    assert not state.run_dir.exists()
    assert snapshots.live_routes(state) == [{"host": "api.example.com"}]


def test_with_live_routes_adds_credential_free_routes_the_manifest_lacks() -> None:
    import dataclasses

    from bot_bottle.egress.config import EgressConfig, Route

    @dataclasses.dataclass(frozen=True)
    class Plan:
        egress_config: EgressConfig | None

    plan = Plan(EgressConfig(routes=(Route(host="a.example"),)))
    live = [
        {"host": "a.example"},
        {"host": "console.example", "source": "console"},
        {"host": "tok.example", "auth": {"scheme": "Bearer", "token_slot": "EGRESS_TOKEN_9"}},
        {"host": 5},  # malformed: ignored
    ]
    out = snapshots.with_live_routes(plan, live)  # type: ignore[arg-type]
    assert [r.host for r in out.egress_config.routes] == ["a.example", "console.example"]  # type: ignore[union-attr]
    assert snapshots.with_live_routes(plan, None) is plan  # type: ignore[arg-type]


def test_the_commit_scan_blocks_token_patterns_and_known_secrets_only() -> None:
    scan = snapshots.secret_scan(PluginHost().load(), [Secret("s3cret-value-of-the-bottle-0123")])
    assert scan("/home/agent/ok", [b"nothing to see"]) == []
    # Split across chunks: still found.
    found = scan("/home/agent/x", [b"aws_access_key_id = AKIAC2GK", b"UKXJ54644TYI\n"])
    assert len(found) == 1 and "aws-access-key-id" in found[0] and "AKIAC2GK" not in found[0]
    found = scan("/home/agent/y", [b"copy: s3cret-value-of-the-bottle-0123"])
    assert len(found) == 1 and found[0].startswith("known_secrets/")
    assert "s3cret" not in found[0]


def test_credential_names_are_names_never_values(home: Path) -> None:
    from bot_bottle.manifest.models import Bottle

    bottle = Bottle.model_validate(
        {
            "name": "b",
            "chain": ["b"],
            "agent_provider": {"template": "shell"},
            "env": {"LIT": "plain", "HOSTED": "${HOST_SECRET}", "ASKED": "?prompt"},
            "egress": {
                "routes": [{"host": "api.x", "auth": {"scheme": "Bearer", "token_ref": "TOK"}}]
            },
        }
    )
    assert snapshots.credential_names(bottle) == ["ASKED", "HOSTED", "TOK"]


def test_snapshot_refused_shows_agent_chosen_paths_safely() -> None:
    from bot_bottle.contracts.freezer import SnapshotRefused

    exc = SnapshotRefused({"/home/agent/\x1b[31mred": ["token_patterns/x"]})
    assert "\x1b" not in exc.message and "/home/agent/" in exc.message
