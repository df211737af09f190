#!/usr/bin/env python3
"""A contract fake of Apple's ``container`` CLI, for tests on Linux.

It implements the commands and JSON outputs the backend relies on, as
apple/container's docs/command-reference.md describes them, keeps its
state in ``$FAKE_CONTAINER_STATE`` (a JSON file) and appends every argv
as a JSON line to ``$FAKE_CONTAINER_LOG``. Knobs:

* ``FAKE_CONTAINER_FAIL=SUBSTR``: any command whose joined argv contains
  SUBSTR exits 1 with an error on stderr (nothing changes).
* ``FAKE_CONTAINER_MALFORMED=SUBCMD``: that subcommand (``ls``, ``inspect``,
  ``network``) prints text that is not JSON.
* ``FAKE_CONTAINER_DIE=NAME``: container NAME stops right after it starts
  (a VM that dies mid-provision); Apple's CLI then still lists it with
  ``--all`` as ``stopped``.

JSON shapes (unverified against the real CLI, from its ContainerSnapshot /
NetworkState encodings): a container is ``{"status": ..., "configuration":
{"id", "labels", "image": {"reference"}}, "networks": [{"network",
"address": "a.b.c.d/24"}]}``; a network ``{"id", "state", "config":
{"labels", "mode"}}``.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import sys
import tarfile
import time
from pathlib import Path
from typing import NoReturn

STATE = Path(os.environ["FAKE_CONTAINER_STATE"])
LOG = Path(os.environ["FAKE_CONTAINER_LOG"])
#: Held from load to save: the launcher runs the relay exec alongside
#: other commands, and a lost update would lose a container.
LOCK = (STATE.parent / "state.lock").open("a")


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"containers": {}, "networks": {}, "images": {}, "subnet": 64}


def save(state: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(STATE)


def fail(msg: str, code: int = 1) -> NoReturn:
    sys.stderr.write(f"Error: {msg}\n")
    sys.exit(code)


def take(args: list[str], flag: str) -> list[str]:
    """Every value of a repeated ``--flag VALUE`` option, removed from args."""
    out = []
    while flag in args:
        i = args.index(flag)
        out.append(args[i + 1])
        del args[i : i + 2]
    return out


def labels(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def fs_root(name: str) -> Path:
    return STATE.parent / "fs" / name


def host_path(c: dict, guest: str) -> Path | None:
    for target, source in c["mounts"].items():
        if guest == target or guest.startswith(target + "/"):
            return Path(source) / guest[len(target) :].lstrip("/")
    return None


def cmd_run(state: dict, args: list[str]) -> None:
    args = args[1:]
    detach = "--detach" in args
    args = [a for a in args if a not in ("--detach", "--no-dns")]
    name = take(args, "--name")[0]
    nets = take(args, "--network")
    lab = labels(take(args, "--label"))
    mounts = {}
    for spec in take(args, "--mount"):
        parts = dict(p.split("=", 1) for p in spec.split(",") if "=" in p)
        mounts[parts["target"]] = parts["source"]
    env = {}
    for path in take(args, "--env-file"):
        for line in Path(path).read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
    for opt in ("--tmpfs", "--user", "--workdir", "--entrypoint", "--memory", "--cpus"):
        take(args, opt)
    if not detach:
        fail("the fake runs detached containers only")
    if name in state["containers"]:
        fail(f"container with id {name} already exists")
    for n in nets:
        if n not in state["networks"]:
            fail(f"network {n} not found")
    image = args[0]
    if image not in state["images"]:
        fail(f"image {image} not found")
    attachments = []
    for n in nets:
        net = state["networks"][n]
        net["next"] = net.get("next", 1) + 1
        attachments.append({"network": n, "address": f"{net['prefix']}.{net['next']}/24"})
    status = "stopped" if os.environ.get("FAKE_CONTAINER_DIE") == name else "running"
    state["containers"][name] = {
        "status": status,
        "configuration": {"id": name, "labels": lab, "image": {"reference": image}},
        "networks": attachments,
        "mounts": mounts,
        "env": env,
        "command": args[1:],
    }
    # The bundle's init: its relay writes bundle.ready into the socket dir.
    sock = mounts.get("/run/bot-bottle/sock")
    if sock and status == "running":
        Path(sock, "bundle.ready").write_text("")
    print(name)


def cmd_exec(state: dict, args: list[str]) -> None:
    args = args[1:]
    flags = {a for a in args if a in ("--interactive", "--tty")}
    args = [a for a in args if a not in flags]
    take(args, "--user")
    take(args, "--workdir")
    env = {}
    for path in take(args, "--env-file"):
        for line in Path(path).read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
    name, argv = args[0], args[1:]
    c = state["containers"].get(name)
    if c is None:
        fail(f"container {name} not found")
    if c["status"] != "running":
        fail(f"container {name} is not running")
    state.setdefault("execs", []).append({"flags": sorted(flags), "env": env, "argv": argv})
    save(state)
    if "bot_bottle_sidecars.relay" in argv:
        (STATE.parent / "relay.pid").write_text(str(os.getpid()))
        fcntl.flock(LOCK, fcntl.LOCK_UN)  # it runs for the bottle's life
        ready = argv[argv.index("--ready-file") + 1]
        target = host_path(c, ready)
        if target is not None:
            target.write_text("")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(0.1)
    root = fs_root(name)
    if argv[:2] == ["sh", "-c"] and "tar -x" in argv[2]:
        dest = root / argv[4].lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read())) as tar:
            tar.extractall(dest, filter="data")
        return
    if argv == ["sh", "-c", "cat >> /etc/hosts"]:
        hosts = root / "etc" / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        with hosts.open("ab") as fh:
            fh.write(sys.stdin.buffer.read())
        return
    if argv[:1] == ["tar"] and "-c" in argv:
        parent, member = argv[argv.index("-C") + 1], argv[-1]
        src = root / parent.lstrip("/") / member
        if not src.exists():
            fail(f"tar: {member}: No such file or directory", 2)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(src, arcname=member)
        sys.stdout.buffer.write(buf.getvalue())
        return
    if argv[:1] == ["false"]:
        sys.exit(1)
    if argv[:1] == ["echo"]:
        print(" ".join(argv[1:]))


def public(c: dict) -> dict:
    return {k: c[k] for k in ("status", "configuration", "networks")}


def main() -> None:
    args = sys.argv[1:]
    with LOG.open("a") as fh:
        fh.write(json.dumps(args) + "\n")
    joined = " ".join(args)
    bad = os.environ.get("FAKE_CONTAINER_FAIL")
    if bad and bad in joined:
        fail(f"injected failure for {bad!r}")
    if os.environ.get("FAKE_CONTAINER_MALFORMED") == args[0]:
        print("{not json")
        return
    fcntl.flock(LOCK, fcntl.LOCK_EX)
    state = load()
    sub = args[0]
    if args[:2] == ["system", "status"]:
        print("apiserver is running")
    elif sub == "run":
        cmd_run(state, args)
    elif sub == "exec":
        cmd_exec(state, args)
        return
    elif sub == "inspect":
        c = state["containers"].get(args[1])
        if c is None:
            fail(f"container {args[1]} not found")
        print(json.dumps([public(c)]))
    elif sub == "ls":
        everyone = "--all" in args
        print(
            json.dumps(
                [
                    public(c)
                    for c in state["containers"].values()
                    if everyone or c["status"] == "running"
                ]
            )
        )
    elif sub == "delete":
        name = args[-1]
        if state["containers"].pop(name, None) is None:
            fail(f"container {name} not found")
    elif sub == "stop":
        c = state["containers"].get(args[-1])
        if c is None:
            fail(f"container {args[-1]} not found")
        c["status"] = "stopped"
    elif args[:2] == ["network", "create"]:
        rest = args[2:]
        internal = "--internal" in rest
        rest = [a for a in rest if a != "--internal"]
        lab = labels(take(rest, "--label"))
        name = rest[0]
        if name in state["networks"]:
            fail(f"network {name} already exists")
        state["subnet"] += 1
        state["networks"][name] = {
            "id": name, "state": "running", "prefix": f"192.168.{state['subnet']}",
            "config": {"labels": lab, "mode": "hostOnly" if internal else "nat"},
        }  # fmt: skip
        print(name)
    elif args[:2] == ["network", "delete"]:
        name = args[2]
        if name not in state["networks"]:
            fail(f"network {name} not found")
        users = [
            c
            for c in state["containers"].values()
            if any(a["network"] == name for a in c["networks"])
        ]
        if users:
            fail(f"network {name} has attached containers")
        del state["networks"][name]
    elif args[:2] == ["network", "ls"]:
        nets = [
            {k: v for k, v in n.items() if k not in ("prefix", "next")}
            for n in state["networks"].values()
        ]
        print(json.dumps(nets))
    elif args[:2] == ["image", "inspect"]:
        ref = args[2]
        if ref not in state["images"]:
            fail(f"image {ref} not found")
        print(json.dumps([{"name": ref, "index": {"digest": state["images"][ref]}}]))
    elif sub == "build":
        rest = args[1:]
        tag = take(rest, "-t")[0]
        state["images"][tag] = "sha256:" + format(abs(hash(tag)), "064x")[:64]
        print(f"Successfully built {tag}")
    else:
        fail(f"the fake does not implement: {joined}")
    save(state)


if __name__ == "__main__":
    main()
