"""Fault 3: the Docker engine restarted under a running bottle, on a second,
private engine (tests/faults/second_engine.py; the shared one is never
touched).

Three ways it goes: the engine crashes (SIGKILL) with the launcher alive, it
is stopped in order (SIGTERM: it stops the containers itself), and it crashes
together with the launcher (a host losing both). In each: while it is down,
``list active`` says it cannot tell (exit 1) instead of "no active bottles",
and ``cleanup`` keeps the state dir (the only record of what may still run);
once it is back, ``list active`` matches what the engine runs, no state dir
names a live launcher, ``cleanup`` reaps what is left, and ``run`` works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bottle_kit import write_agent
from tests.faults.second_engine import HOST_CA, SecondEngine, bottle_images

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a second dockerd needs root"),
]

BB = [sys.executable, "-m", "bot_bottle"]
SHELL_BOTTLE = "---\nagent_provider:\n  template: shell\n---\n"


@pytest.fixture(scope="module")
def engine(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: object,
    base_image: str,
    second_docker: SecondEngine,
) -> tuple[SecondEngine, dict[str, str]]:
    home = tmp_path_factory.mktemp("restart") / "home"
    write_agent(home, "sh", SHELL_BOTTLE)
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    second_docker.load(*bottle_images(home, "sh", env))
    return second_docker, second_docker.env(env)


def _bb(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BB, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _active(env: dict[str, str]) -> list[str]:
    r = _bb(env, "list", "active", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return [row["slug"] for row in json.loads(r.stdout)["active"]]


def _running(eng: SecondEngine, slug: str) -> list[str]:
    """Names of the slug's running containers, by the engine's own listing."""
    out = eng.docker("ps", "--filter", f"label=bot-bottle.slug={slug}", "--format", "{{.Names}}")
    return out.stdout.split()


def _everything(eng: SecondEngine, slug: str) -> list[str]:
    flt = f"label=bot-bottle.slug={slug}"
    containers = eng.docker("ps", "-a", "--filter", flt, "--format", "{{.Names}} {{.Status}}")
    networks = eng.docker("network", "ls", "--filter", flt, "--format", "{{.Name}}")
    return containers.stdout.splitlines() + networks.stdout.split()


@pytest.mark.parametrize(
    "how",
    ["engine-crash", "engine-stop", "engine-and-launcher-crash", "engine-crash-while-starting"],
)
def test_after_an_engine_restart_list_tells_the_truth_and_cleanup_reaps(
    engine: tuple[SecondEngine, dict[str, str]], how: str, tmp_path: Path
) -> None:
    eng, env = engine
    state = Path(env["BOT_BOTTLE_HOME"]) / "state"
    err = tmp_path / "launcher.err"
    proc = subprocess.Popen([*BB, "run", "sh", "--", "sleep", "600"], env=env,
                            stdout=subprocess.DEVNULL, stderr=err.open("w"))  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        slugs: list[str] = []
        while not slugs:
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, "the bottle did not come up"
            time.sleep(0.5)
            slugs = _active(env)
        (slug,) = slugs
        if how != "engine-crash-while-starting":
            # The agent's command runs (the launch is over).
            agent = f"bb-{slug}-agent"
            while "sleep 600" not in eng.docker("top", agent, check=False).stdout:
                assert proc.poll() is None, err.read_text()[-2000:]
                assert time.monotonic() < deadline, "the agent's command did not start"
                time.sleep(0.2)
            assert len(_running(eng, slug)) == 3

        if how == "engine-and-launcher-crash":
            proc.kill()
        eng.kill(signal.SIGTERM if how == "engine-stop" else signal.SIGKILL)

        # Down: nobody can tell what runs, and nobody claims to.
        down = _bb(env, "list", "active")
        why = (down.stdout, down.stderr, [p.name for p in state.iterdir()], err.read_text()[-1500:])
        if how != "engine-crash-while-starting":  # its launcher may have ended already
            assert down.returncode == 1, why
            assert "warning: cannot list the bottles of backend docker: " in down.stderr
            assert "no active bottles that could be asked" in down.stdout

        # The launcher lost its engine: it ends (non-zero) instead of hanging.
        launcher_rc = proc.wait(timeout=120)
        launcher_err = err.read_text()
        assert launcher_rc != 0, launcher_err
        assert "Traceback" not in launcher_err, launcher_err
        assert "internal error" not in launcher_err, launcher_err
        if how == "engine-crash-while-starting":
            # Whatever step it was in: the operator is told what happened.
            told = "error: lost the connection to a service bot-bottle was using"
            assert told in launcher_err or f"state kept for {slug}" in launcher_err, launcher_err
        else:
            # cleanup cannot look at the engine: the state dir stays (a dead
            # launcher's is the only record of what may still run there).
            kept = _bb(env, "cleanup", "--yes")
            if how == "engine-and-launcher-crash":
                assert kept.returncode == 1, kept.stdout + kept.stderr
                assert f"keeping {state / slug}: its backend is not available" in kept.stderr
            assert (state / slug).is_dir(), kept.stdout + kept.stderr

        eng.start()
        # Back: the engine stopped the bottle's containers (no live-restore);
        # list active agrees with what the engine runs.
        assert _running(eng, slug) == []
        assert slug not in _active(env)
        # No state dir names a live launcher.
        for d in state.iterdir():
            pid = json.loads((d / "metadata.json").read_text())["pid"]
            assert not Path(f"/proc/{pid}").exists() or pid == os.getpid(), (d, pid)

        reaped = _bb(env, "cleanup", "--yes")
        assert reaped.returncode == 0, reaped.stdout + reaped.stderr
        if how == "engine-and-launcher-crash":
            # Nobody kept it for resume: everything goes.
            assert _everything(eng, slug) == [], reaped.stdout
            assert not (state / slug).exists()
        elif how == "engine-crash-while-starting":
            gone = _bb(env, "cleanup", "--yes", "--preserved")
            assert gone.returncode == 0, gone.stdout + gone.stderr
            assert _everything(eng, slug) == [], (reaped.stdout, gone.stdout, launcher_err)
            assert not (state / slug).exists()
        else:
            # The launcher saw the agent end non-zero and kept it for resume
            # (its stopped agent and state dir); the rest is gone.
            assert f"state kept for {slug}" in launcher_err, launcher_err
            left = _everything(eng, slug)
            assert [x.split()[0] for x in left] == [f"bb-{slug}-agent"], (
                left,
                reaped.stdout,
                launcher_err,
            )
            assert (state / slug / "preserve").exists()
            gone = _bb(env, "cleanup", "--yes", "--preserved")
            assert gone.returncode == 0, gone.stdout + gone.stderr
            assert _everything(eng, slug) == [] and not (state / slug).exists()
        assert _bb(env, "list", "active").stdout.strip() == "no active bottles"

        again = _bb(env, "run", "sh", "--", "true")
        assert again.returncode == 0, again.stderr[-2000:]
        assert list(state.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if eng.proc is None or eng.proc.poll() is not None:
            eng.start()  # the next case (and teardown) wants it up
