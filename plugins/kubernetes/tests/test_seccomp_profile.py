"""The agent pod's Localhost seccomp profile: the file written for the nodes
is the one the pod names, and it is the Docker backend's (socket families
limited), not a weaker copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot_bottle_docker.seccomp import profile_json
from bot_bottle_kubernetes.render import render_bottle


def test_written_profile_is_the_one_the_agent_pod_names(
    tmp_path: Path, make_kube_plan: Any, launch_inputs: dict[str, Any]
) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bot_bottle_kubernetes.seccomp", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    written = Path(r.stdout.strip())
    pod = next(
        o
        for o in render_bottle(make_kube_plan("minimal"), **launch_inputs)
        if o["kind"] == "Pod" and o["metadata"]["name"].endswith("-agent")
    )
    profile = pod["spec"]["securityContext"]["seccompProfile"]
    assert profile["type"] == "Localhost"
    assert written == tmp_path / profile["localhostProfile"]
    assert written.read_text() == profile_json()
    doc = json.loads(written.read_text())
    # The family limit is in it: socket() with AF_VSOCK (40) is refused.
    sockets = [s for s in doc["syscalls"] if "socket" in s["names"]]
    assert sockets and any(s.get("args") for s in sockets)


def test_a_changed_profile_gets_a_new_name() -> None:
    from bot_bottle_kubernetes.render import seccomp_profile_name

    assert seccomp_profile_name('{"a":1}') != seccomp_profile_name('{"a":2}')
    assert seccomp_profile_name('{"a":1}').startswith("bot-bottle/")
