"""git-gate push cost: a branch of 1,000 new commits / ~20 MB of diff.

Pushes the same branch (a) straight to an upstream over SSH and (b) through a
running git-gate (real ``git daemon``, real pre-receive scan, forwarded over
SSH to a second, identical upstream), all on 127.0.0.1 with a real sshd this
script starts. Prints the time spent scanning (from the gate's own log) and
its ratio to the direct push, measured in the same run.

    .venv/bin/python bench/gitgate_push.py [--commits 1000] [--mb 20] [--json]

Detectors: every installed DLP detector plus the test detector from
``sidecars/tests/gitgate_detector`` (AWS key ids, GitHub tokens, PEM keys).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DETECTOR = REPO / "sidecars" / "tests" / "gitgate_detector"
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_"))},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@bottle.test",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@bottle.test",
}


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(argv), cwd=cwd, env=env or ENV, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        sys.exit(f"{' '.join(argv)} failed:\n{proc.stderr}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"{what} did not start")


def start_sshd(root: Path) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for name in ("host", "client"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name))
    shutil.copy(root / "client.pub", root / "authorized_keys")
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\n"
    )
    log = (root / "sshd.log").open("ab")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=log
    )
    wait_port(port, "sshd", proc)
    host_pub = " ".join((root / "host.pub").read_text().split()[:2])
    return proc, port, host_pub, root / "client"


def make_branch(work: Path, commits: int, total_mb: float) -> int:
    """``commits`` commits on branch ``bench``, each adding a ~equal text file."""
    rng = random.Random(6)
    per_commit = int(total_mb * 1024 * 1024 / commits)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(4000)]
    parent = run("git", "rev-parse", "main", cwd=work).strip()
    chunks: list[bytes] = []
    total = 0
    for i in range(commits):
        lines: list[str] = []
        size = 0
        while size < per_commit:
            line = "    " + " = ".join(rng.choices(words, k=6)) + f"  # {rng.random():.12f}\n"
            lines.append(line)
            size += len(line)
        blob = "".join(lines).encode()
        total += len(blob)
        msg = f"bench commit {i}: add module {i}\n".encode()
        when = 1_700_000_000 + i
        head = f"commit refs/heads/bench\ncommitter bench <bench@bottle.test> {when} +0000\n"
        chunks.append(head.encode() + b"data %d\n" % len(msg) + msg)
        if i == 0:
            chunks.append(f"from {parent}\n".encode())
        chunks.append(f"M 100644 inline src/mod_{i:04d}.py\n".encode())
        chunks.append(b"data %d\n" % len(blob) + blob + b"\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"], cwd=work, env=ENV, input=b"".join(chunks), check=True
    )
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bot_bottle_sidecars.launch.keys import GateKeys

    from bot_bottle.gitgate.plan import plan_git_gate
    from bot_bottle.gitgate.spec import GateKey, GateRepoSpec

    root = Path(tempfile.mkdtemp(prefix="gitgate-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sshd, ssh_port, host_pub, client_key = start_sshd(root)
        procs.append(sshd)
        user = os.environ.get("USER") or "root"
        seed = root / "seed"
        run("git", "init", "-q", "-b", "main", str(seed))
        (seed / "README.md").write_text("# bench\n")
        run("git", "add", "-A", cwd=seed)
        run("git", "commit", "-q", "-m", "initial", cwd=seed)
        for name in ("direct", "gated"):
            run("git", "init", "-q", "--bare", "-b", "main", str(root / f"{name}.git"))
            run("git", "push", "-q", str(root / f"{name}.git"), "main", cwd=seed)
        diff_bytes = make_branch(seed, args.commits, args.mb)

        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {host_pub}\n")
        ssh = (
            f"ssh -F /dev/null -i {client_key} -o IdentitiesOnly=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts} -o BatchMode=yes"
        )
        t0 = time.perf_counter()
        run(
            "git", "push", "-q", f"ssh://{user}@127.0.0.1:{ssh_port}{root}/direct.git", "bench",
            cwd=seed, env={**ENV, "GIT_SSH_COMMAND": ssh},
        )  # fmt: skip
        direct = time.perf_counter() - t0

        gate_port = free_port()
        spec = GateRepoSpec(
            "gated",
            f"ssh://{user}@127.0.0.1:{ssh_port}{root}/gated.git",
            host_pub,
            GateKey.static(client_key),
        )
        plan = plan_git_gate(
            [spec], gate_host="127.0.0.1", gate_port=gate_port, sidecar_root=root / "sidecar"
        )
        for rel, text in plan.files().items():
            (root / "sidecar" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "sidecar" / rel).write_text(text)
        GateKeys(plan, root / "sidecar" / "keys", bottle_slug="bench").stage()
        home = root / "home"
        shutil.copytree(DETECTOR, home / "contrib" / "testsecrets")
        gate_log = root / "gate.log"
        out = gate_log.open("ab")
        gate = subprocess.Popen(
            [sys.executable, "-m", "bot_bottle_sidecars.gitgate", f"--config={plan.config_path}",
             f"--base={root / 'mirrors'}", f"--port={gate_port}", "--listen=127.0.0.1"],
            stdout=out, stderr=out, env={**ENV, "BOT_BOTTLE_HOME": str(home)},
        )  # fmt: skip
        procs.append(gate)
        wait_port(gate_port, "git-gate", gate)
        gate_url = f"git://127.0.0.1:{gate_port}/gated.git"
        run("git", "ls-remote", gate_url, cwd=seed)  # the mirror learns the upstream's main
        t0 = time.perf_counter()
        run("git", "push", "-q", gate_url, "bench", cwd=seed)
        gated = time.perf_counter() - t0
        assert run("git", "--git-dir", str(root / "gated.git"), "rev-parse", "bench") == run(
            "git", "rev-parse", "bench", cwd=seed
        )

        events = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not {"push scanned", "push forwarded"} <= set(events):
            for line in gate_log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    events[event.get("event")] = event
            time.sleep(0.1)
        scanned, forwarded = events["push scanned"], events["push forwarded"]
        result = {
            "commits": args.commits,
            "diff_mb": round(diff_bytes / 1024 / 1024, 1),
            "detectors": scanned["detectors"],
            "direct_push_s": round(direct, 2),
            "gated_push_total_s": round(gated, 2),
            "scan_s": scanned["seconds"],
            "forward_s": forwarded["seconds"],
            "scanned_mb": round(scanned["bytes"] / 1024 / 1024, 1),
            "scan_mb_per_s": round(scanned["bytes"] / 1024 / 1024 / scanned["seconds"], 1),
            "scan_vs_direct": round(scanned["seconds"] / direct, 2),
            "gated_vs_direct": round(gated / direct, 2),
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"branch: {result['commits']} commits, {result['diff_mb']} MB of added lines; "
                f"detectors: {', '.join(result['detectors'])}\n"
                f"direct push over ssh:     {result['direct_push_s']:7.2f} s\n"
                f"push through git-gate:    {result['gated_push_total_s']:7.2f} s "
                f"({result['gated_vs_direct']}x direct)\n"
                f"  of which scanning:      {result['scan_s']:7.2f} s "
                f"({result['scan_vs_direct']}x direct, {result['scan_mb_per_s']} MB/s)\n"
                f"  of which forwarding:    {result['forward_s']:7.2f} s"
            )
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
