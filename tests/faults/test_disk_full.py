"""Fault 4 (the state half): ``BOT_BOTTLE_HOME`` on a full filesystem (a
small tmpfs this test mounts). The launch fails with an error naming the
disk, leaves no state dir and no container, and the next run works once
space is back. (A full disk during an image build needs a second Docker
engine with its own data root: not covered here.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root"),
]

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_named_nothing_is_left_and_the_next_run_works(
    small_home: Path, docker_client: Any, base_image: str
) -> None:
    from bot_bottle.state import home_id

    home = small_home / "home"
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
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
