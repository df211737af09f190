"""Fault 4: a full disk.

- ``BOT_BOTTLE_HOME`` on a full filesystem (a small tmpfs this test mounts):
  the launch fails with an error naming the disk, leaves no state dir and no
  container, and the next run works once space is back.
- ``BOT_BOTTLE_HOME`` filling up while a bottle runs: the agent's requests
  are still answered by its sidecars (their logs stop growing, they do not
  crash), the run ends with the agent's own exit code, the history's
  ``bottle.json`` is whole, no state dir is left, and the next run works.
- The Docker engine's data root full during an image build: a second,
  private engine (tests/faults/second_engine.py) whose data root is a small
  loop-mounted ext4 (overlay2 needs a real filesystem under it; tmpfs is not
  one it accepts), filled up after the bundle image was loaded, so the agent
  image must be built. The error names the engine's disk, no image is
  tagged, nothing is left running, and the next run builds and works once
  space is back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.bottle_kit import write_agent
from tests.faults.second_engine import SecondEngine, bottle_images, second_engine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root"),
]

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]
SHELL_BOTTLE = "---\nagent_provider:\n  template: shell\n---\n"


@contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mnt`` (created), unmounted after."""
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _env(home: Path) -> dict[str, str]:
    """The CLI's environment for ``home``, building behind the host's CA."""
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    return env


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "small", "512k") as mnt:
        yield mnt


def test_a_full_disk_is_named_nothing_is_left_and_the_next_run_works(
    small_home: Path, docker_client: Any, base_image: str
) -> None:
    from bot_bottle.state import home_id

    home = small_home / "home"
    env = _env(home)
    subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
    filler = small_home / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    r = subprocess.run([*BB, "run", "demo", "--", "true"], env=env, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "error: no space left for bot-bottle's state: cannot write " in r.stderr
    assert f"df -h {home / 'state'}" in r.stderr and "Traceback" not in r.stderr
    assert list((home / "state").iterdir()) == []
    flt = {"label": f"bot-bottle.home={home_id(home / 'state')}"}
    assert docker_client.containers.list(all=True, filters=flt) == []

    filler.unlink()
    ok = subprocess.run([*BB, "run", "demo", "--", "true"], env=env, capture_output=True,
                        text=True, timeout=600)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert list((home / "state").iterdir()) == []


@pytest.fixture
def small_engine(tmp_path: Path) -> Iterator[tuple[SecondEngine, Path]]:
    """A second engine whose data root is a 2 GiB ext4 of its own (no blocks
    reserved for root: dockerd runs as root and would use them)."""
    image = tmp_path / "disk.img"
    mnt = Path(tempfile.mkdtemp(prefix="bbd-", dir="/tmp"))
    subprocess.run(["truncate", "-s", "2G", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        with second_engine(data_root=mnt / "docker") as eng:
            eng.nat()  # the build after space is back fetches packages
            yield eng, mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)  # the loop device goes too
        shutil.rmtree(mnt, ignore_errors=True)


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
    subprocess.run(["sync", "-f", str(mnt)], check=True)
    assert shutil.disk_usage(mnt).free < 8 << 20, shutil.disk_usage(mnt)
    return filler


def test_a_full_engine_disk_during_a_build_is_named_and_the_next_run_builds(
    small_engine: tuple[SecondEngine, Path], tmp_path: Path, docker_client: Any, base_image: str
) -> None:
    eng, mnt = small_engine
    home = tmp_path / "home"
    write_agent(home, "sh", SHELL_BOTTLE)
    env = _env(home)
    base, agent_image, bundle_image = bottle_images(home, "sh", env)
    eng.load(base, bundle_image)
    env = eng.env(env)
    filler = _fill(mnt)

    r = subprocess.run([*BB, "run", "sh", "--", "true"], env=env, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    data_root = mnt / "docker"
    assert (
        f"error: no space left on the Docker engine's disk while building {agent_image} "
        f"(its data root {data_root})"
    ) in r.stderr, r.stderr
    assert f"df -h {data_root}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # Nothing half-made: no image under the content tag, no container, no state.
    assert eng.docker("image", "inspect", agent_image, check=False).returncode != 0
    assert eng.docker("ps", "-aq").stdout.split() == []
    assert not (home / "state").exists() or list((home / "state").iterdir()) == []

    filler.unlink()
    ok = subprocess.run([*BB, "run", "sh", "--", "true"], env=env, capture_output=True,
                        text=True, timeout=900)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert f"building image {agent_image}" in ok.stderr
    assert eng.docker("image", "inspect", agent_image, check=False).returncode == 0
    assert list((home / "state").iterdir()) == []


@pytest.fixture
def home_4m(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


def test_a_home_that_fills_during_a_run_does_not_break_the_bottle(
    home_4m: Path, docker_client: Any, base_image: str
) -> None:
    import json
    import time

    home = home_4m / "home"
    write_agent(home, "sh", SHELL_BOTTLE)
    env = _env(home)
    # Waits for the disk to be full (a file the test drops in /tmp of the
    # agent), then makes requests egress answers and logs (denied: 403).
    script = (
        "while [ ! -e /tmp/full ]; do sleep 0.1; done; "
        "for i in $(seq 30); do curl -s -o /dev/null -w '%{http_code} ' http://denied.test/x; "
        "done; echo"
    )
    proc = subprocess.Popen([*BB, "run", "sh", "--", "sh", "-c", script], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    state = home / "state"
    deadline = time.monotonic() + 240
    agent = None
    slugs: list[str] = []
    while agent is None:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the agent's command did not start"
        time.sleep(0.2)
        slugs = [p.name for p in state.iterdir()] if state.exists() else []
        if slugs:
            agent = _running_with(docker_client, f"bb-{slugs[0]}-agent", "/tmp/full")
    filler = _fill_tmpfs(home_4m)
    assert agent.exec_run(["touch", "/tmp/full"]).exit_code == 0
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert out.split() == ["403"] * 30, out
    assert "Traceback" not in err, err
    assert list(state.iterdir()) == []
    (history,) = (home / "history").iterdir()
    info = json.loads((history / "bottle.json").read_text())
    assert info["slug"] == slugs[0] and info["ended_at"], info
    assert not list(history.rglob("*.tmp"))

    filler.unlink()
    ok = subprocess.run([*BB, "run", "sh", "--", "true"], env=env, capture_output=True,
                        text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert list(state.iterdir()) == []


def _fill_tmpfs(mnt: Path) -> Path:
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
    assert shutil.disk_usage(mnt).free == 0, shutil.disk_usage(mnt)
    return filler


def _running_with(client: Any, name: str, needle: str) -> Any | None:
    """The container ``name`` once a process whose command line has ``needle`` runs in it."""
    import docker.errors

    try:
        container = client.containers.get(name)
        return container if needle in str(container.top()) else None
    except docker.errors.APIError:  # not created or not started yet
        return None
