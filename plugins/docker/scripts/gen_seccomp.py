"""Generate the agent's and relay's seccomp profile from Docker's default.

Usage: python plugins/docker/scripts/gen_seccomp.py DEFAULT_JSON > \
    plugins/docker/src/bot_bottle_docker/seccomp-bottle.json

DEFAULT_JSON is the engine's own default profile, as Debian ships it
(package golang-github-docker-docker-dev,
/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json;
moby, Apache-2.0). The output keeps every rule of it and changes two things:

* ``socket()`` is allowed for AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK only;
  every other family fails with EAFNOSUPPORT (AF_VSOCK reaches the VM host's
  vsock services past every network namespace).
* Only the native x86_64 / aarch64 ... ABIs: the 32-bit sub-architectures
  (x86, x32, arm, ...) are dropped, because their ``socketcall()``
  multiplexer passes the family in memory, where seccomp cannot see it. A
  32-bit syscall then meets the filter's bad-architecture action (refused).
* ``socketpair()`` for AF_UNIX only (EAFNOSUPPORT for the rest).
* No io_uring (``io_uring_setup``/``enter``/``register`` fall to the default
  action): its ``IORING_OP_SOCKET`` opens a socket of any family without a
  ``socket()`` syscall, so seccomp never sees the family.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
ALLOWED = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
EAFNOSUPPORT = 97
#: Syscalls that do another syscall's work where seccomp cannot see it.
DROPPED = ("socket", "socketcall", "socketpair", "io_uring_setup", "io_uring_enter",
           "io_uring_register")  # fmt: skip


def _eq(value: int) -> dict[str, Any]:
    return {"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}


def generate(base: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for arch in out.get("archMap") or []:
        arch["subArchitectures"] = None
    rules = []
    for rule in out["syscalls"]:
        names = [n for n in rule["names"] if n not in DROPPED]
        if names:
            rules.append({**rule, "names": names})
    # One comparison per rule: runc ORs several comparisons of one argument.
    for family in ALLOWED:
        rules.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [_eq(family)]})
    refused = [f for f in range(max(ALLOWED)) if f not in ALLOWED]
    for family in refused:
        rules.append({"names": ["socket"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": EAFNOSUPPORT, "args": [_eq(family)]})  # fmt: skip
    rules.append({
        "names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": EAFNOSUPPORT,
        "args": [{"index": 0, "value": max(ALLOWED) + 1, "valueTwo": 0, "op": "SCMP_CMP_GE"}],
    })  # fmt: skip
    rules.append({"names": ["socketcall"], "action": "SCMP_ACT_ERRNO", "errnoRet": EAFNOSUPPORT})
    # socketpair() creates sockets of its family too (the family's own create
    # code runs, AF_VSOCK's included): only AF_UNIX has a use for it.
    rules.append({"names": ["socketpair"], "action": "SCMP_ACT_ALLOW", "args": [_eq(AF_UNIX)]})
    rules.append({
        "names": ["socketpair"], "action": "SCMP_ACT_ERRNO", "errnoRet": EAFNOSUPPORT,
        "args": [{"index": 0, "value": AF_UNIX, "valueTwo": 0, "op": "SCMP_CMP_NE"}],
    })  # fmt: skip
    out["syscalls"] = rules
    return out


def main() -> None:
    base = json.loads(Path(sys.argv[1]).read_text())
    json.dump(generate(base), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
