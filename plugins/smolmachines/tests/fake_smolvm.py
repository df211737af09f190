"""A contract fake of the ``smolvm`` CLI (1.32) for the steps that need a booted guest.

Every answer is copied from the real CLI (run on this machine, where
``machine create``/``ls``/``stop``/``delete``/``pack create`` and every
error run for real; see test_real_cli.py, which checks the same shapes against
the real binary): the ``--error-format json`` error object and its codes
(NOT_FOUND, CONFIG_ERROR, SMOLVM_ERROR), ``machine ls --json``'s fields, the
"not running" answer of exec and cp, ``stop`` of a machine that is not
running (exit 0), ``delete`` without ``--force`` off a terminal, pack of a
never-started machine. What a booted guest would do (start, exec's output,
cp into the guest) is simulated: the guest's filesystem is a host directory.
The guest's ``sh`` knows the two scripts the backend sends (the freezer's
launch marker and its commit read: ``find -cnewer`` over that directory by
the host's real inode change times, and a tar of it), ``rm -f``, and
``pkill`` (a no-op: the simulated guest runs no agent processes).

Environment:
    FAKE_SMOLVM_DIR   state: machines.json, calls.jsonl (one argv per line), fs/<machine>/
    FAKE_SMOLVM_FAIL  "<verb>:<exit>[:<times>]" entries, comma-separated: that command
                      (e.g. "machine start", "exec true") exits so, the first <times> calls
    FAKE_SMOLVM_LS    "malformed": ls --json prints something that is not JSON
    FAKE_SMOLVM_DIE_AFTER  the VM dies (state "stopped") after this many execs
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_SMOLVM_DIR"])
MACHINES = STATE / "machines.json"


def err(code: str, message: str, rc: int = 1) -> int:
    sys.stderr.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    return rc


def load() -> dict[str, dict[str, object]]:
    return json.loads(MACHINES.read_text()) if MACHINES.exists() else {}


def save(machines: dict[str, dict[str, object]]) -> None:
    MACHINES.write_text(json.dumps(machines))


def opts(args: list[str]) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(flags -> values, positionals, tail after --)."""
    tail: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, tail = args[:i], args[i + 1 :]
    flags: dict[str, list[str]] = {}
    pos: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("--json", "--force", "-f", "-i", "-t"):
            flags.setdefault(a, []).append("")
        elif a.startswith("-"):
            flags.setdefault(a, []).append(next(it, ""))
        else:
            pos.append(a)
    return flags, pos, tail


def injected(verb: str) -> int | None:
    """An injected exit code for ``verb``, counting down its <times>."""
    spec = os.environ.get("FAKE_SMOLVM_FAIL", "")
    counts = STATE / "fail-counts.json"
    done = json.loads(counts.read_text()) if counts.exists() else {}
    for entry in filter(None, spec.split(",")):
        parts = entry.split(":")
        if parts[0] != verb:
            continue
        times = int(parts[2]) if len(parts) > 2 else 10**9
        if done.get(entry, 0) < times:
            done[entry] = done.get(entry, 0) + 1
            counts.write_text(json.dumps(done))
            return int(parts[1])
    return None


def not_running(name: str) -> int:
    return err(
        "SMOLVM_ERROR",
        f"agent operation failed: connect: machine '{name}' is not running. Start it with "
        f"'smolvm machine start --name {name}'; if a start is already in progress, retry "
        "once it finishes.",
    )


def ls_entry(name: str, m: dict[str, object]) -> dict[str, object]:
    return {
        "allowed_cidrs": m["allowed_cidrs"], "block_io": "sync", "branchable": False,
        "branchpoint_held": False, "cmd": [], "cpus": 4, "created_at": m["created_at"],
        "cuda": False, "detached": False, "disk_durability": "full", "disks": [],
        "entrypoint": [], "ephemeral": False, "forkable": False, "gpu": False,
        "image": m["image"], "labels": m["labels"], "memory_mib": 8192, "mounts": 0,
        "name": name, "network": m["network"], "pid": m.get("pid"), "ports": 0,
        "restart_count": 0, "restart_policy": "never", "state": m["state"],
        "state_reason": None,
    }  # fmt: skip


def guest(name: str, path: str) -> Path:
    return STATE / "fs" / name / path.lstrip("/")


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "calls.jsonl").open("a") as f:
        f.write(json.dumps(argv) + "\n")
    if not argv:
        return err("USAGE", "no command")
    if argv[0] == "--version":
        print("smolvm 1.32.2")
        return 0
    verb = " ".join(argv[:2])
    flags, pos, tail = opts(argv[2:])
    name = (flags.get("--name") or flags.get("--from-vm") or [""])[0]
    rc = injected(verb)
    if verb == "machine exec" and rc is None:
        rc = injected(f"exec {tail[0]}" if tail else "exec")
    if rc is not None:
        if rc == 137:
            return 137  # SIGKILLed: no error object
        return err("SMOLVM_ERROR", f"injected failure of {verb}", rc)
    machines = load()
    if verb == "machine ls":
        if os.environ.get("FAKE_SMOLVM_LS") == "malformed":
            print("[{'name': broken")
            return 0
        print(json.dumps([ls_entry(n, m) for n, m in sorted(machines.items())], indent=2))
        return 0
    if verb == "machine create":
        if name in machines:
            return err(
                "CONFIG_ERROR",
                f"config operation failed: create machine: machine '{name}' already exists "
                "or is being created",
            )
        labels = dict(v.split("=", 1) for v in flags.get("--label", []))
        cidrs = flags.get("--allow-cidr", [])
        machines[name] = {
            "image": "local:" + "0" * 64, "labels": labels, "allowed_cidrs": cidrs or None,
            "network": bool(cidrs or "--net" in flags or "--dns" in flags),
            "state": "created", "created_at": int(time.time()), "started": False,
        }  # fmt: skip
        save(machines)
        print(f"Created machine: {name}\n  CPUs: 4, Memory: 8192 MiB")
        return 0
    if verb == "machine cp":
        src, dest = pos
        vm_side = src if ":" in src and not src.startswith("/") else dest
        vm = vm_side.split(":", 1)[0]
        if vm not in machines:
            return err("NOT_FOUND", f"vm not found: {vm}")
        if machines[vm]["state"] != "running":
            return not_running(vm)
        if vm_side == dest:
            target = guest(vm, dest.split(":", 1)[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        else:
            shutil.copyfile(guest(vm, src.split(":", 1)[1]), dest)
        return 0
    if name not in machines:
        return err("NOT_FOUND", f"vm not found: {name}")
    m = machines[name]
    if verb == "machine start":
        m.update(state="running", started=True, pid=os.getpid(), execs=0)
        save(machines)
        print(f"Starting machine '{name}'...")
        return 0
    if verb == "machine stop":
        if m["state"] != "running":
            print(f"Machine '{name}' is not running (state: {m['state']})")
            return 0
        m.update(state="stopped", pid=None)
        save(machines)
        print(f"Stopping machine '{name}'...")
        return 0
    if verb == "machine delete":
        if "--force" not in flags and "-f" not in flags:
            return err(
                "SMOLVM_ERROR",
                f"agent operation failed: delete: machine '{name}' needs confirmation but "
                "stdin is not a terminal; pass --force to delete it, or --cascade to remove "
                "it together with any machines branched from it",
            )
        del machines[name]
        save(machines)
        shutil.rmtree(STATE / "fs" / name, ignore_errors=True)
        print(f"Cleaning up data directory for vm: {name}\nDeleted machine: {name}")
        return 0
    if verb == "machine exec":
        if m["state"] != "running":
            return not_running(name)
        m["execs"] = int(m.get("execs", 0)) + 1  # type: ignore[call-overload]
        die_after = os.environ.get("FAKE_SMOLVM_DIE_AFTER")
        if die_after and m["execs"] > int(die_after):  # type: ignore[operator]
            m.update(state="stopped", pid=None)
            save(machines)
            return not_running(name)
        save(machines)
        if not os.isatty(1) and not _is_pipe(1) and "-t" not in flags:
            # The real exec fails with no stderr when stdout is a regular file.
            return 1
        # The simulated guest: a few commands answer from its directory.
        root = STATE / "fs" / name
        root.mkdir(parents=True, exist_ok=True)
        if tail[:1] == ["runuser"]:
            # runuser -u USER -- env K=V ... CMD: the guest's user switch.
            tail = tail[tail.index("--") + 1 :]
            if tail[:1] == ["env"]:
                tail = tail[1:]
                while tail and "=" in tail[0]:
                    tail = tail[1:]
        if tail[:1] == ["cat"] and len(tail) == 2:
            data = guest(name, tail[1])
            if not data.exists():
                sys.stderr.write(f"cat: {tail[1]}: No such file or directory\n")
                return 1
            sys.stdout.write(data.read_text())
            return 0
        if tail[:2] == ["sh", "-c"] and 'touch "$1"' in tail[2]:
            mark = guest(name, tail[4])  # the launch marker
            mark.parent.mkdir(parents=True, exist_ok=True)
            mark.touch()
            return 0
        if tail[:2] == ["sh", "-c"] and tail[2].startswith("set -e\nfind / -xdev -cnewer"):
            return _commit_read(root, *tail[4:7])
        if tail[:2] == ["rm", "-f"]:
            for path in tail[2:]:
                guest(name, path).unlink(missing_ok=True)
            return 0
        if tail[:1] == ["sh"] and len(tail) > 3 and tail[3].startswith("/run/"):
            # exec "$@" < FILE: the staged stdin, fed to the rest.
            data = guest(name, tail[3]).read_bytes()
            return subprocess.run(tail[4:], input=data, check=False, cwd=root).returncode
        if tail[:1] == ["exit"]:
            return int(tail[1])
        if tail[:1] in (["echo"], ["true"], ["false"]):
            return subprocess.run(tail, check=False).returncode
        return 0
    if verb == "pack create":
        vm = (flags.get("--from-vm") or [""])[0]
        if m["state"] == "running":
            return err("SMOLVM_ERROR", f"pack from VM: machine '{vm}' is running; stop it first")
        if not m["started"]:
            return err(
                "SMOLVM_ERROR",
                f"agent operation failed: pack from VM: machine '{vm}' has no storage disk "
                "yet: it has never been started.",
            )
        out = Path(flags["-o"][0])
        Path(f"{out}.smolmachine").write_bytes(b"fake smolmachine")
        print(f"Packing VM '{vm}' snapshot...")
        return 0
    return err("USAGE", f"the fake does not know {verb}")


def _commit_read(root: Path, marker: str, tar_out: str, list_out: str) -> int:
    """The commit script: NUL-separated regular files whose inode changed
    after the marker was touched, and a tar of the whole root."""
    mark = root / marker.lstrip("/")
    if not mark.exists():
        sys.stderr.write(f"find: '{marker}': No such file or directory\n")
        return 1
    since = mark.stat().st_mtime_ns
    skip = {root / tar_out.lstrip("/"), root / list_out.lstrip("/")}
    changed = [
        "/" + str(p.relative_to(root))
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p not in skip and p.stat().st_ctime_ns > since
    ]
    (root / list_out.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / list_out.lstrip("/")).write_bytes(b"".join(c.encode() + b"\0" for c in changed))
    with tarfile.open(root / tar_out.lstrip("/"), "w") as tar:
        for p in sorted(root.rglob("*")):
            if p not in skip:
                tar.add(p, arcname="./" + str(p.relative_to(root)), recursive=False)
    return 0


def _is_pipe(fd: int) -> bool:
    import stat

    return stat.S_ISFIFO(os.fstat(fd).st_mode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
