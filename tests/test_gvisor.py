"""gVisor: used only when a bottle works under it, and doctor says which.

On these machines (Docker 20.10, Debian's runsc 20221219) the probe fails
for a reason it names (plugins/docker/README.md, "gVisor"); it was run by
hand with runsc registered both ways (see the README for its two verdicts).
The engine here is shared, so the tests do not register runtimes on it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.docker


def test_an_unregistered_runtime_is_never_used(docker_client) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import docker\n"
        "from bot_bottle_docker import gvisor\n"
        "from bot_bottle_docker.backend import gvisor_runtime\n"
        "c = docker.from_env()\n"
        "print(gvisor_runtime(c, 'unused-image'), gvisor.probe(c, 'unused-image').detail)\n"
    )
    env = {**os.environ, "BOT_BOTTLE_GVISOR_RUNTIME": "bb-no-such-runtime"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True)  # fmt: skip
    assert r.stdout.strip() == "None bb-no-such-runtime is not registered with the Docker engine"


def test_doctor_says_whether_gvisor_is_used_and_why(docker_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "BOT_BOTTLE_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "bot_bottle.cli", "doctor"], env=env,
                       capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    line = next(x for x in r.stdout.splitlines() if x.split()[1:3] == ["backend", "docker:"])
    assert "gVisor: " in line
    assert (
        "runsc is not registered" in line
        or "runsc registered but not used: " in line
        or "gVisor: on: runsc runs the agent" in line
    ), line
