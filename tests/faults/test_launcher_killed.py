"""Fault 6: the launcher SIGKILLed (no teardown at all) at each phase of a
launch; ``cleanup`` then leaves nothing: no container, network or state dir.

Each phase is caught by polling for what it creates, then the launcher is
SIGSTOPped at once (what exists then is recorded for the failure messages)
and SIGKILLed. Engine calls the launcher had in flight still complete in the
engine after it died: cleanup must catch those too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, docker_client: Any, base_image: str
) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "BOT_BOTTLE_HOME": str(tmp / "home")}
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
    yield env
    state = tmp / "home" / "state"
    for c in docker_client.containers.list(all=True, filters={"label": "bot-bottle.backend"}):
        if (state / c.labels.get("bot-bottle.slug", "-")).exists():
            c.remove(force=True)


def _what_exists(client: Any, state: Path) -> dict[str, Any]:
    slugs = [d.name for d in state.iterdir()] if state.exists() else []
    if not slugs:
        return {"slug": None}
    flt = {"label": f"bot-bottle.slug={slugs[0]}"}
    containers = client.containers.list(all=True, filters=flt)
    return {
        "slug": slugs[0],
        "network": bool(client.networks.list(filters=flt)),
        "roles": {c.labels["bot-bottle.role"]: c.status for c in containers},
        "ready": (state / slugs[0] / "run" / "sock" / "agent.ready").exists(),
    }


PHASES: dict[str, Callable[[dict[str, Any]], bool]] = {
    # metadata.json written, nothing in the engine yet
    "state-dir": lambda w: w["slug"] is not None,
    "network": lambda w: w.get("network", False),
    "first-container": lambda w: bool(w.get("roles")),
    "all-containers": lambda w: set(w.get("roles", {})) == {"agent", "sidecars", "relay"},
    # the sidecars answer: provisioning done or under way, the agent about to run
    "ready": lambda w: w.get("ready", False),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_cleanup_leaves_nothing_after_the_launcher_is_killed(
    home: dict[str, str], docker_client: Any, phase: str, tmp_path: Path
) -> None:
    import docker.errors

    state = Path(home["BOT_BOTTLE_HOME"]) / "state"
    proc = subprocess.Popen(
        [*BB, "run", "demo", "--", "sleep", "600"],
        env=home,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "launcher.err").open("w"),
    )
    seen: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen = _what_exists(docker_client, state)
            except (docker.errors.NotFound, FileNotFoundError):
                continue  # something vanished between two looks: look again
            if PHASES[phase](seen):
                proc.send_signal(signal.SIGSTOP)
                break
            time.sleep(0.005)
        err = (tmp_path / "launcher.err").read_text()
        assert proc.poll() is None, f"the launcher ended by itself: {err[-2000:]}"
        # What exists while the launcher is frozen (for the messages below):
        # usually the phase itself, or a little later.
        frozen: dict[str, Any] = {}
        for _ in range(10):
            try:
                frozen = _what_exists(docker_client, state)
                break
            except (docker.errors.NotFound, FileNotFoundError):
                time.sleep(0.1)  # a container listed then gone (an engine call finishing)
        err = (tmp_path / "launcher.err").read_text()
    finally:
        proc.kill()
        proc.wait()
    slug = seen["slug"]
    r = subprocess.run(
        [*BB, "cleanup", "--yes"], env=home, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    flt = {"label": f"bot-bottle.slug={slug}"}
    left = [(c.name, c.status) for c in docker_client.containers.list(all=True, filters=flt)]
    assert left == [], (phase, seen, frozen, r.stdout, r.stderr, err[-1500:])
    assert docker_client.networks.list(filters=flt) == [], (phase, seen, frozen, err[-1500:])
    assert not (state / slug).exists(), (phase, seen, frozen, r.stdout)
    listed = subprocess.run(
        [*BB, "list", "active", "--json"], env=home, capture_output=True, text=True, check=True
    )
    assert slug not in json.dumps(json.loads(listed.stdout))
