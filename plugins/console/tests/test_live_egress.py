"""Live egress changes (headless), against a real egress daemon."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bot_bottle import audit
from bot_bottle.egress.config import EgressConfig, EgressConfigError
from bot_bottle.supervision import live_egress
from bot_bottle.supervision.live_egress import EgressReloadError

from .conftest import World


def test_allow_adds_a_route_the_daemon_enforces_without_restart(world: World) -> None:
    pid = world.daemon.proc.pid
    assert world.fetch("new.upstream.test") == 403
    change = live_egress.allow(
        world.control,
        {"host": "new.upstream.test", "ports": [world.port]},
        plugins=world.plugins,
        comment="needed for the build",
    )
    assert change.before is None and change.after is not None
    assert world.hosts() == ["base.upstream.test", "new.upstream.test"]
    assert world.fetch("new.upstream.test") == 200
    assert world.daemon.proc.pid == pid and world.daemon.proc.poll() is None
    # The file the bottle mounts says the same, and is readable by the daemon's user.
    assert EgressConfig.load(world.control.config_path).route_for("new.upstream.test")
    assert world.control.config_path.stat().st_mode & 0o777 == 0o644
    (entry,) = [e for e in audit.read() if e["action"] == "egress.allow"]
    assert entry["bottle"] == "dev-7f3a" and entry["route"] == "new.upstream.test"
    assert entry["comment"] == "needed for the build" and "before" not in entry
    assert entry["after"]["host"] == "new.upstream.test"


def test_deny_removes_the_route_live(world: World) -> None:
    assert world.fetch("base.upstream.test") == 200
    live_egress.deny(world.control, "base.upstream.test", comment="done")
    assert world.hosts() == []
    assert world.fetch("base.upstream.test") == 403
    assert [e["action"] for e in audit.read()] == ["egress.deny"]


def test_a_path_and_method_restricted_route_is_enforced(world: World) -> None:
    spec = {
        "host": "new.upstream.test",
        "ports": [world.port],
        "matches": [{"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["GET"]}],
    }
    live_egress.allow(world.control, spec, plugins=world.plugins)
    assert world.fetch("new.upstream.test") == 403  # "/" is outside /v1
    (route,) = [
        r for r in world.control.live_routes()["routes"] if r["host"] == "new.upstream.test"
    ]
    assert route["matches"] == [
        {"paths": [{"type": "prefix", "value": "/v1"}], "methods": ["GET"], "headers": []}
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"host": "10.1.2.3"}, "IP address"),
        ({"host": "new.upstream.test", "ports": [0]}, "ports"),
        ({"host": "new.upstream.test", "bogus": 1}, "bogus"),
        (
            {"host": "new.upstream.test", "auth": {"scheme": "Bearer", "token_ref": "TOK"}},
            "cannot carry a credential",
        ),
    ],
)
def test_invalid_routes_are_refused_before_anything_changes(
    world: World, spec: dict[str, object], message: str
) -> None:
    before = world.control.config_path.read_bytes()
    with pytest.raises(EgressConfigError) as err:
        live_egress.allow(world.control, spec, plugins=world.plugins)
    assert message in err.value.message + str(err.value.hint)
    assert world.control.config_path.read_bytes() == before
    assert world.hosts() == ["base.upstream.test"]
    assert list(audit.read()) == []


def test_a_config_the_daemon_refuses_is_reported_and_the_old_table_kept(world: World) -> None:
    """The file validates on the host, but the daemon cannot load it (a DLP
    detector it does not have): the caller gets the daemon's reason, the old
    file is back, and the daemon keeps enforcing the old table."""
    before = world.control.config_path.read_bytes()
    config = EgressConfig.load(world.control.config_path)
    data = json.loads(config.dump_json())
    data["routes"].append(
        {"host": "new.upstream.test", "dlp": {"outbound_detectors": ["no-such-detector"]}}
    )
    with pytest.raises(EgressReloadError) as err:
        live_egress.apply_config(world.control, EgressConfig.model_validate(data), timeout=10)
    assert "no-such-detector" in err.value.message
    assert "keeps its previous routes" in err.value.message
    assert world.control.config_path.read_bytes() == before
    assert world.hosts() == ["base.upstream.test"]
    assert world.fetch("base.upstream.test") == 200


def test_a_failed_allow_is_audited_as_failed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon stops answering (killed): the change cannot be confirmed.
    world.daemon.stop()
    monkeypatch.setattr(live_egress, "RELOAD_TIMEOUT", 2.0)
    with pytest.raises(EgressReloadError):
        live_egress.apply_config(
            world.control, EgressConfig.load(world.control.config_path), timeout=2.0
        )
    with pytest.raises(EgressReloadError):
        live_egress.allow(world.control, {"host": "new.upstream.test"}, plugins=world.plugins)
    actions = [e["action"] for e in audit.read()]
    assert actions == ["egress.allow", "egress.allow.failed"]


def test_an_unexpected_error_while_confirming_puts_the_old_file_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error no backend wrapped (a dropped exec connection, say) while the
    change is being confirmed: the caller sees it, and the daemon's file and
    table are the old ones, so nothing the operator was told failed is
    enforced later."""
    before = world.control.config_path.read_bytes()

    def dropped(*_a: Any, **_k: Any) -> Any:
        raise ConnectionResetError("exec stream closed")

    monkeypatch.setattr(world.control, "live_routes", dropped)
    config = EgressConfig.load(world.control.config_path)
    data = json.loads(config.dump_json())
    data["routes"].append({"host": "new.upstream.test"})
    with pytest.raises(ConnectionResetError):
        live_egress.apply_config(world.control, EgressConfig.model_validate(data), timeout=10)
    assert world.control.config_path.read_bytes() == before
    monkeypatch.undo()
    # The restore's reload may land after the new file's: wait for it, bounded.
    deadline = time.monotonic() + 20
    while world.hosts() != ["base.upstream.test"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.hosts() == ["base.upstream.test"]
    assert world.fetch("new.upstream.test") == 403
