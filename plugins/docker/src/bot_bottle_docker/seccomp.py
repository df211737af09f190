"""The seccomp profile of the agent and relay containers.

Docker's default profile (from the engine's Debian package; see
``plugins/docker/scripts/gen_seccomp.py``, which generates
``seccomp-bottle.json``) with ``socket()`` limited to AF_UNIX, AF_INET,
AF_INET6 and AF_NETLINK (others: EAFNOSUPPORT) and the 32-bit ABIs refused
(``socketcall()`` hides the family from seccomp), and no io_uring (its
``IORING_OP_SOCKET`` opens any family without a ``socket()`` syscall).
``network_mode=none``
removes interfaces, not address families: AF_VSOCK reaches the VM host.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

PROFILE = "seccomp-bottle.json"


@functools.cache
def profile_json() -> str:
    text = resources.files("bot_bottle_docker").joinpath(PROFILE).read_text()
    return json.dumps(json.loads(text), separators=(",", ":"))


def seccomp_opt() -> str:
    """The ``security_opt`` entry (the API takes the profile itself)."""
    return f"seccomp={profile_json()}"
