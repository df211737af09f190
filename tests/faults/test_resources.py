"""Fault 3's guard rails: each container runs under its manifest ``resources:``
limits (the defaults here), as the engine and the kernel's cgroup see them."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Bottle

pytestmark = pytest.mark.docker


def test_each_container_runs_under_its_default_limits(bottle: Bottle) -> None:
    from bot_bottle.manifest.models import DEFAULT_LIMITS, memory_bytes

    for role, name in (("agent", "agent"), ("bundle", "sidecars"), ("relay", "relay")):
        c = bottle.docker.containers.get(f"bb-{bottle.slug}-{name}")
        host = c.attrs["HostConfig"]
        want = DEFAULT_LIMITS[role]
        assert host["Memory"] == memory_bytes(want["memory"]), role
        assert host["MemorySwap"] == host["Memory"], f"{role} may swap"
        assert host["PidsLimit"] == want["pids"], role
        assert host["NanoCpus"] == int(want["cpus"] * 1e9), role
    # The kernel enforces them: the container's own cgroup (v2, or v1 as on
    # some CI hosts) as seen from inside.
    code, out = bottle.sh(
        "cd /sys/fs/cgroup; if [ -e memory.max ]; then cat memory.max pids.max; "
        "else cat memory/memory.limit_in_bytes pids/pids.max; fi"
    )
    assert code == 0, out
    assert out.split() == [str(memory_bytes("4g")), "4096"]
