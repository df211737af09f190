"""Fault 2: a reload with an invalid egress config keeps the previous route
table in force, logs why, and whoever asked (``reload_routes``, ``ctl
reload``, a SIGHUP's status) gets the error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.faults.conftest import Bottle

pytestmark = pytest.mark.docker

CURL = "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://allowed.test/echo"


def _config(bottle: Bottle) -> Path:
    from bot_bottle.state import StateDir

    return StateDir.for_slug(bottle.slug).run_dir / "etc" / "egress" / "egress.json"


def _write(path: Path, text: str) -> None:
    # Replaced, not rewritten in place: what the route-change CLI does too.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def test_a_bad_reload_keeps_the_previous_table_and_the_caller_gets_why(bottle: Bottle) -> None:
    from bot_bottle_docker.control import reload_routes

    path = _config(bottle)
    good = path.read_text()
    try:
        assert bottle.sh(CURL)[1] == "200"
        # A valid change takes effect (so "kept" below means something).
        emptied = json.loads(good)
        emptied["routes"] = []
        _write(path, json.dumps(emptied))
        outcome = reload_routes(bottle.slug)
        assert outcome.ok and outcome.error is None, outcome
        assert bottle.sh(CURL)[1] == "403"

        _write(path, good)
        assert reload_routes(bottle.slug).ok
        assert bottle.sh(CURL)[1] == "200"

        # An invalid one: refused, the table before it stays.
        broken = json.loads(good)
        broken["routes"] = [{"host": "allowed.test", "auth": {"scheme": "Bearer"}}, "junk"]
        _write(path, json.dumps(broken))
        outcome = reload_routes(bottle.slug)
        assert not outcome.ok
        assert outcome.error is not None and outcome.error.startswith("egress: ")
        assert outcome.results["egress"]["ok"] is False
        assert bottle.sh(CURL)[1] == "200"
        events = bottle.bundle_events()
        assert any(
            e.get("event") == "reload failed; keeping the previous routes" for e in events
        ), "egress did not log the refusal"
        failed = [e for e in events if e.get("event") == "daemon_reload_failed"]
        assert failed and failed[-1]["error"] == outcome.results["egress"]["error"]

        # Not JSON at all, sent as a plain SIGHUP to the bundle (docker kill -s HUP):
        # nobody waits for an answer, so the outcome is in init's status.
        _write(path, "{ not json")
        bottle.bundle.kill(signal="SIGHUP")
        deadline = time.monotonic() + 30
        while True:
            last = bottle.init_status()["egress"]["last_reload"]
            if last and not last["ok"] and last["error"] != outcome.results["egress"]["error"]:
                break
            assert time.monotonic() < deadline, f"no reload outcome in the status: {last}"
            time.sleep(0.2)
        assert bottle.sh(CURL)[1] == "200"
    finally:
        _write(path, good)
        assert reload_routes(bottle.slug).ok
