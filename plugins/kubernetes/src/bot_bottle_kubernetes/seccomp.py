"""The agent pod's seccomp profile, for the nodes.

Kubernetes has two kinds of profile a pod can name: ``RuntimeDefault`` (the
runtime's, which lets ``socket()`` open any address family) and
``Localhost`` (a file in the kubelet's seccomp directory, normally
``/var/lib/kubelet/seccomp``). The bottle's limits (socket families
AF_UNIX/INET/INET6/NETLINK only, no 32-bit ABIs, no io_uring; see
``bot_bottle_docker.seccomp``) need the second, so the agent pod names
``Localhost`` with the Docker backend's profile, content-named
(:func:`bot_bottle_kubernetes.render.seccomp_profile_name`). A node without
the file refuses to start the pod (CreateContainerError): it fails closed.
``BOT_BOTTLE_K8S_SECCOMP=runtime-default`` trades the family limits for not
installing anything on the nodes.

    python -m bot_bottle_kubernetes.seccomp DIR   # writes DIR/bot-bottle/seccomp-bottle-<hash>.json

Copy ``DIR``'s contents into each node's kubelet seccomp directory
(``real-cluster.sh`` does it for kind).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot_bottle_kubernetes.render import agent_seccomp_json, seccomp_profile_name


def profile() -> tuple[str, str]:
    """(localhostProfile name, profile JSON) the agent pod uses."""
    text = agent_seccomp_json()
    return seccomp_profile_name(text), text


def write_profile(root: Path) -> Path:
    """Write the profile where ``root`` stands for a kubelet seccomp directory."""
    name, text = profile()
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bot_bottle_kubernetes.seccomp DIR\n")
        return 2
    sys.stdout.write(f"{write_profile(Path(args[0]))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
