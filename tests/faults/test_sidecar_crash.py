"""Fault 1: a sidecar daemon killed from the host (SIGKILL) is started again
by init with backoff; while it is down the agent gets an answer naming the
sidecar (HTTP 503, git ERR), never a way around it; ``list active`` and the
bundle's log tell the operator which daemon died, of what, how often."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.faults.conftest import Bottle, Probe

pytestmark = pytest.mark.docker

#: One request per protocol, printed as "up <detail>", "down <sidecar's answer>" or "lost".
HTTP = """c=$(curl -sS -m 5 -o /tmp/pb-{n} -w '%{{http_code}}' {args} 2>/dev/null)
case "$c" in 503) echo "down $(head -c 300 /tmp/pb-{n})";; 000) echo lost;; *) echo "up";; esac"""
GIT = """o=$(timeout 10 git ls-remote {url} 2>&1)
case "$o" in *bot-bottle:*) echo "down $(printf %s "$o" | grep -o 'bot-bottle: .*' | head -1)";;
  *"hung up"*|*"Connection refused"*|*"reset by peer"*) echo lost;; *) echo up;; esac"""


def _request(bottle: Bottle, endpoint: str) -> str:
    if endpoint == "proxy":
        return HTTP.format(n="proxy", args="http://allowed.test/echo")
    if endpoint == "mcp":
        return HTTP.format(n="mcp", args="http://127.0.0.1:8765/mcp")
    o = bottle.outside
    return GIT.format(url=f"ssh://git@{o.host}:{o.listener_port}/proj.git")


def _wait_running(bottle: Bottle, daemon: str, old_pid: int) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = bottle.init_status()[daemon]
        if state["state"] == "running" and state["pid"] not in (None, old_pid):
            return state
        time.sleep(0.2)
    pytest.fail(f"{daemon} was not restarted")


@pytest.mark.parametrize(
    ("daemon", "endpoint", "message"),
    [
        ("egress", "proxy", "bot-bottle: the egress sidecar is restarting"),
        ("git-gate", "git", "bot-bottle: the git-gate sidecar is restarting"),
        ("supervise", "mcp", "bot-bottle: the supervise sidecar is restarting"),
        # The bundle's relay carries every endpoint; the agent-side relay answers.
        ("relay", "proxy", "bot-bottle: the relay sidecar is restarting"),
    ],
)
def test_a_killed_daemon_is_restarted_and_the_agent_is_told_meanwhile(
    bottle: Bottle, daemon: str, endpoint: str, message: str
) -> None:
    before = bottle.init_status()[daemon]
    assert before["state"] == "running"
    with Probe(bottle, daemon, _request(bottle, endpoint)) as probe:
        old = bottle.kill(daemon)
    after = _wait_running(bottle, daemon, old)
    seen = probe.verdicts()
    assert seen[0] == "up", seen
    downs = [v for v in seen if v.startswith("down")]
    assert downs, f"the agent never saw the sidecar's answer: {seen}"
    assert all(d.startswith(f"down {message}") for d in downs), downs
    assert seen[-1] == "up", seen
    # A request in flight at the kill may be cut (lost), nothing more.
    assert seen.count("lost") <= 2, seen

    assert after["crashes"] == before["crashes"] + 1
    assert after["last_exit"] == "signal SIGKILL"
    events = bottle.bundle_events()
    exits = [e for e in events if e.get("event") == "daemon_exited" and e["daemon"] == daemon]
    assert exits and exits[-1]["signal"] == "SIGKILL" and exits[-1]["restart_in"] == 0.5
    assert exits[-1]["level"] == "error"


def test_list_active_shows_each_daemons_state_and_crash_count(bottle: Bottle) -> None:
    from bot_bottle_docker.backend import DockerBackend

    status = bottle.init_status()
    row = next(r for r in DockerBackend().list_active() if r.slug == bottle.slug)
    shown = {d.name: d for d in row.daemons}
    assert set(shown) == {"egress", "git-gate", "supervise", "relay"}
    for name, st in status.items():
        assert (shown[name].state, shown[name].crashes) == (st["state"], st["crashes"])
    # The command line, as the operator runs it.
    env = {**os.environ, "BOT_BOTTLE_HOME": str(bottle.home)}
    cli = [sys.executable, "-m", "bot_bottle.cli", "list", "active"]
    text = subprocess.run(cli, capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in text.splitlines() if bottle.slug in x)
    for name, st in status.items():
        assert f"{name} ok" in line
        if st["crashes"]:
            assert f"{name} ok ({st['crashes']} crash" in line
    js = subprocess.run([*cli, "--json"], capture_output=True, text=True, env=env, check=True)
    mine = next(r for r in json.loads(js.stdout)["active"] if r["slug"] == bottle.slug)
    assert {d["name"]: d["crashes"] for d in mine["daemons"]} == {
        n: s["crashes"] for n, s in status.items()
    }
