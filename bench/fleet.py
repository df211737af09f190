"""A fleet: 20 demo bottles started at once on this machine.

    .venv/bin/python bench/fleet.py [--bottles 20]

Each bottle runs ``bot-bottle run demo`` with a command that prints the
moment it started (so, the moment its bottle was ready: the command runs
after the sidecars answer), then waits for the bench to release it. Once
all are ready the bench checks that each has its own egress network,
sums their memory, and times an egress request from every bottle
(``curl`` to egress's own route table, ``time_total``: the request alone).

Baseline in the same run: one bottle alone, started the same way, and its
request time. The machine may be shared: the load average is printed.

Targets (issue #21): all ready, distinct networks, total <= 40 s (first
launch to last ready); once up, no bottle's request slower than 3x the
lone bottle's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
from bottle_lifecycle import BB, bench_env, cgroup_mib, load, timings, verdict

#: Prints the start moment and the hostname (the slug), then waits for GO.
GO = "/tmp/go"  # noqa: S108 - a path in the agent container, not here
HOLD = f"date +%s.%N; hostname; while [ ! -e {GO} ]; do sleep 0.2; done"
CURL = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}\\n", "http://_egress.local/routes"]


@dataclass
class Bottle:
    proc: subprocess.Popen[str]
    started: float
    err: Path
    ready_at: float | None = None
    slug: str = ""
    requests: list[float] = field(default_factory=list)


def launch(env: dict[str, str], label: str, err: Path) -> Bottle:
    with err.open("w") as fh:
        proc = subprocess.Popen(
            [*BB, "run", "demo", "--timings", "--label", label, "--", "sh", "-c", HOLD],
            env=env, stdout=subprocess.PIPE, stderr=fh, text=True,
        )  # fmt: skip
    return Bottle(proc, time.time(), err)


def wait_ready(bottles: list[Bottle], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for b in bottles:
        assert b.proc.stdout is not None
        line = b.proc.stdout.readline()  # blocks until this bottle's command runs
        if not line or time.monotonic() > deadline:
            raise SystemExit(f"a bottle did not become ready (exit {b.proc.poll()})")
        b.ready_at = float(line)
        b.slug = b.proc.stdout.readline().strip()


def requests(client: docker.DockerClient, b: Bottle, n: int = 5) -> None:
    agent = client.containers.get(f"bb-{b.slug}-agent")
    for _ in range(n):
        out: bytes = agent.exec_run(CURL, user="agent").output  # type: ignore[assignment]
        b.requests.append(float(out.decode().strip() or "nan"))


def release(client: docker.DockerClient, bottles: list[Bottle]) -> None:
    for b in bottles:
        if b.slug:
            client.containers.get(f"bb-{b.slug}-agent").exec_run(["touch", GO])
    for b in bottles:
        b.proc.wait(timeout=120)


def cpu_seconds(container: object) -> float:
    st = container.stats(stream=False)["cpu_stats"]  # type: ignore[attr-defined]
    return st["cpu_usage"]["total_usage"] / 1e9


def engine_cpu() -> float:
    """CPU seconds dockerd and containerd have used (the engine is shared:
    other users' work in the same window counts too)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() not in ("dockerd", "containerd"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bottles", type=int, default=20)
    args = ap.parse_args()
    client = docker.from_env()
    print(f"load average at start: {load()} (2 cores here, shared with other work)")
    with tempfile.TemporaryDirectory(prefix="bb-fleet-") as tmp:
        env = bench_env(tmp)
        subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
        print("warming images (first run may build them) ...", flush=True)
        subprocess.run([*BB, "run", "demo", "--", "true"], env=env, check=True, capture_output=True)

        # Baseline: one bottle alone.
        lone = launch(env, f"bench-lone-{os.getpid()}", Path(tmp) / "lone.err")
        wait_ready([lone], 120)
        lone_ready = (lone.ready_at or 0) - lone.started
        requests(client, lone)
        release(client, [lone])
        lone_req = statistics.median(lone.requests)
        print(f"one bottle alone: ready in {lone_ready:.1f} s; "
              f"egress request median {lone_req * 1000:.1f} ms")  # fmt: skip

        label = f"bench-fleet-{os.getpid()}"
        t0 = time.time()
        cli_before, engine_before = _children_cpu(), engine_cpu()
        bottles = [launch(env, label, Path(tmp) / f"{i}.err") for i in range(args.bottles)]
        try:
            wait_ready(bottles, 300)
            total = max(b.ready_at or 0 for b in bottles) - t0
            nets = client.networks.list(filters={"label": f"bot-bottle.label={label}"})
            names = {n.name for n in nets}
            slugs = {b.slug for b in bottles}
            ours = client.containers.list(filters={"label": f"bot-bottle.label={label}"})
            # One stats call samples for ~1-2 s: all at once.
            with ThreadPoolExecutor(max_workers=16) as pool:
                mem = sum(pool.map(cgroup_mib, ours))
                container_cpu = sum(pool.map(cpu_seconds, ours))
            engine = engine_cpu() - engine_before
            print(f"load average with {args.bottles} bottles up: {load()}")
            for b in bottles:
                requests(client, b)
        finally:
            release(client, bottles)
        # The launchers, reaped now: their whole CPU (launch, requests' waits, teardown).
        cli_cpu = _children_cpu() - cli_before
        codes = sorted({b.proc.returncode for b in bottles})
        readies = sorted((b.ready_at or 0) - b.started for b in bottles)
        worst = max(statistics.median(b.requests) for b in bottles)
        n = args.bottles
        print(f"\n{n} bottles started at once:")
        print(f"  all ready: {len(slugs) == n and codes == [0]} (distinct slugs {len(slugs)}, "
              f"exit codes {codes})")  # fmt: skip
        print(f"  distinct egress networks while all were up: {len(names)}   "
              f"target {n}: {verdict(len(names) == n)}")  # fmt: skip
        print(f"  first launch to last ready: {total:.1f} s   target <= 40 s: "
              f"{verdict(total <= 40)}")  # fmt: skip
        print(f"  each bottle's ready time: median {statistics.median(readies):.1f} s, "
              f"max {readies[-1]:.1f} s (alone: {lone_ready:.1f} s)")  # fmt: skip
        phases = [timings(b.err.read_text()) for b in bottles]
        keys = [k for k in phases[0] if k not in ("agent", "teardown")]
        print("  each bottle's phases (median / max, s): " + ", ".join(
            f"{k} {statistics.median(p.get(k, 0) for p in phases):.1f}/"
            f"{max(p.get(k, 0) for p in phases):.1f}" for k in keys))  # fmt: skip
        cores = os.cpu_count() or 1
        per = (cli_cpu + container_cpu) / n
        print(f"  CPU per bottle: launcher {cli_cpu / n:.1f} s (whole run), its containers "
              f"{container_cpu / n:.1f} s (to ready and the requests); {per:.1f} s x {n} "
              f"bottles / {cores} cores = {per * n / cores:.0f} s of the machine")  # fmt: skip
        print(f"  the engine (dockerd, containerd) meanwhile: {engine:.0f} CPU-s, "
              f"{engine / n:.1f} s per bottle")  # fmt: skip
        print(f"  memory of all {n} (cgroups): {mem:.0f} MiB, {mem / n:.0f} MiB per bottle")
        ratio = worst / lone_req
        print(f"  slowest bottle's egress request median once up: {worst * 1000:.1f} ms "
              f"= {ratio:.1f}x the lone one   target <= 3x: {verdict(ratio <= 3)}")  # fmt: skip
    print(f"\nload average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
