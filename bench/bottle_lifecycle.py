"""Bottle lifecycle: time to ready and teardown, idle memory, ten bottles at once.

    .venv/bin/python bench/bottle_lifecycle.py [--runs 3] [--concurrent 10]

Uses a throwaway BOT_BOTTLE_HOME with the demo agent (``bot-bottle init``);
images are warmed first, so the figures are for warm images. Baseline in
the same run: ``docker run --rm --network none <agent image> true``.
Targets (a bottle per task has to feel as quick as a shell): ready <= 3 s,
teardown <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]


def _run(env: dict[str, str], *args: str) -> tuple[float, str]:
    t = time.monotonic()
    r = subprocess.run([*BB, *args], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bot-bottle {' '.join(args)} failed: {r.stderr[-800:]}")
    return time.monotonic() - t, r.stdout + r.stderr


def _timings(text: str) -> dict[str, float]:
    m = re.search(r"^timings: (.*)$", text, re.M)
    return (
        {k: float(v.rstrip("s")) for k, v in (p.split("=") for p in m.group(1).split())}
        if m
        else {}
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=10)
    args = ap.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="bb-bench-") as tmp:
        env = dict(os.environ, BOT_BOTTLE_HOME=str(Path(tmp) / "home"))
        if HOST_CA.exists():
            env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
        _run(env, "init")
        print("warming images (first run may build them) ...", flush=True)
        _run(env, "run", "demo", "--", "true")

        # Baseline: a bare container with no network, same image.
        agent_image = sorted(
            client.images.list(name="bot-bottle/agent-shell"), key=lambda i: i.attrs["Created"]
        )[-1].tags[0]
        base = []
        for _ in range(args.runs):
            t = time.monotonic()
            subprocess.run(
                ["docker", "run", "--rm", "--network", "none", agent_image, "true"], check=True
            )
            base.append(time.monotonic() - t)

        walls, phases = [], []
        for _ in range(args.runs):
            wall, out = _run(env, "run", "demo", "--timings", "--", "true")
            walls.append(wall)
            phases.append(_timings(out))
        med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
        base_med = statistics.median(base)
        print(f"\nbot-bottle run demo -- true, {args.runs} runs (median):")
        print(f"  wall              {statistics.median(walls):6.2f} s")
        for k in ("images", "files", "containers", "sidecars_ready", "launch", "provision"):
            print(f"  {k:17} {med.get(k, 0):6.2f} s")
        print(f"  ready (to agent)  {med['ready']:6.2f} s   target <= 3 s")
        print(f"  teardown          {med['teardown']:6.2f} s   target <= 2 s")
        print(f"  baseline docker run --network none true: {base_med:.2f} s "
              f"(wall ratio {statistics.median(walls) / base_med:.1f}x)")  # fmt: skip

        # Idle memory: a bottle sleeping, agent + bundle + relay.
        proc = subprocess.Popen(
            [*BB, "run", "demo", "--label", "bench-idle", "--", "sleep", "120"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            containers = []
            while time.monotonic() < deadline:
                containers = client.containers.list(
                    filters={"label": "bot-bottle.label=bench-idle"}
                )
                if len(containers) == 3:
                    break
                time.sleep(0.3)
            time.sleep(5)  # let the daemons settle
            total = 0
            print("\nidle memory (cgroup usage minus page cache):")
            for c in containers:
                st = c.stats(stream=False)["memory_stats"]  # pyright: ignore[reportIndexIssue]
                used = st.get("usage", 0) - st.get("stats", {}).get("inactive_file", 0)
                total += used
                print(f"  {c.labels['bot-bottle.role']:9} {used / 2**20:7.1f} MiB")
            print(f"  total     {total / 2**20:7.1f} MiB")
        finally:
            proc.terminate()
            proc.wait()

        # Ten at once.
        n = args.concurrent
        t = time.monotonic()
        procs = [
            subprocess.Popen(
                [*BB, "run", "demo", "--", "sh", "-c", "sleep 2; hostname"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        peak_nets = 0
        while any(p.poll() is None for p in procs):
            nets = client.networks.list(filters={"label": "bot-bottle.agent=demo"})
            peak_nets = max(peak_nets, len(nets))
            time.sleep(0.5)
        total_s = time.monotonic() - t
        slugs = {p.stdout.read().strip() for p in procs if p.stdout}  # type: ignore[union-attr]
        codes = [p.returncode for p in procs]
        print(f"\n{n} bottles started concurrently: all done in {total_s:.1f} s; "
              f"exit codes {sorted(set(codes))}; distinct slugs {len(slugs)}; "
              f"peak egress networks at once {peak_nets}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
