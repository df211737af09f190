"""Bottle lifecycle: ``run demo -- true`` end to end by phase, teardown, idle memory.

    .venv/bin/python bench/bottle_lifecycle.py [--runs 5]

Uses a throwaway BOT_BOTTLE_HOME with the demo agent (``bot-bottle init``);
images are warmed first, so the figures are for warm images. Baseline in
the same run: a bare ``docker run --rm <base image> true``. The machine may
be shared (other work on the same cores): the load average is printed at the
start and the end, and every figure should be read against it.

Targets (issue #21): end to end <= 2.0 s median and <= 7x the baseline;
teardown <= 0.4 s; idle memory per bottle (agent + relay + bundle, from
their cgroups) <= 100 MiB, with no daemon running that the bottle does not
use (git-gate without repos, supervise before its first call).

``--compare TREE`` also runs another source tree of bot-bottle (say main's,
from ``git archive main | tar -x -C TREE``) through ``PYTHONPATH`` with
this environment's packages, alternated with this tree's runs, and prints
its medians and the ratio: the two see the same load. (The bundle image is
the one this tree's sources make, for both.) Each run also reports the
launcher's CPU (user + system of the CLI process and its children).

The CLI runs as a user's would: with its bytecode cache (an environment
that sets PYTHONDONTWRITEBYTECODE, as some sandboxes do, makes every run
compile ~500 modules, ~1 s; it is unset for the child processes here).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]
#: --timings phases that partition the wall time, in order.
PARTS = ("startup", "plan", "prepare", "images", "files", "containers")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


#: CPU seconds (user + system) of the last ``_run``: the launcher process
#: and what it waited for (the containers' CPU is the engine's, not here).
LAST_CPU = [0.0]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(env: dict[str, str], *args: str) -> tuple[float, str]:
    t, cpu = time.monotonic(), _children_cpu()
    r = subprocess.run([*BB, *args], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bot-bottle {' '.join(args)} failed: {r.stderr[-800:]}")
    LAST_CPU[0] = _children_cpu() - cpu
    return time.monotonic() - t, r.stdout + r.stderr


def timings(text: str) -> dict[str, float]:
    m = re.search(r"^timings: (.*)$", text, re.M)
    return (
        {k: float(v.rstrip("s")) for k, v in (p.split("=") for p in m.group(1).split())}
        if m
        else {}
    )


def bench_env(tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["BOT_BOTTLE_HOME"] = str(Path(tmp) / "home")
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    return env


def tree_path(root: Path) -> str:
    """PYTHONPATH running the packages of the source tree ``root``."""
    dirs = [root / "core" / "src", *sorted((root / "plugins").glob("*/src"))]
    dirs += [root / "sidecars" / "src", root / "testkit" / "src"]
    return os.pathsep.join(str(d) for d in dirs if d.is_dir())


def base_image() -> str:
    from bot_bottle_docker.baseimage import image_name

    return image_name()


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def cgroup_mib(container: object) -> float:
    """Memory the container's cgroup holds, minus reclaimable page cache."""
    st = container.stats(stream=False)["memory_stats"]  # type: ignore[attr-defined]
    stats = st.get("stats", {})
    return (st.get("usage", 0) - stats.get("inactive_file", 0)) / 2**20


def idle_memory(env: dict[str, str], client: docker.DockerClient, label: str) -> float:
    proc = subprocess.Popen(
        [*BB, "run", "demo", "--label", label, "--", "sleep", "120"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        containers: list[Any] = []
        while time.monotonic() < deadline:
            containers = client.containers.list(filters={"label": f"bot-bottle.label={label}"})
            if len(containers) == 3 and _ready(env, containers):
                break
            time.sleep(0.3)
        time.sleep(5)  # let the daemons settle
        total = 0.0
        print("\nidle memory, one bottle sleeping (cgroup usage minus inactive page cache):")
        for c in containers:
            used = cgroup_mib(c)
            total += used
            print(f"  {c.labels['bot-bottle.role']:9} {used:7.1f} MiB")  # type: ignore[attr-defined]
        slug = containers[0].labels["bot-bottle.slug"]  # type: ignore[attr-defined]
        status = Path(env["BOT_BOTTLE_HOME"]) / "state" / slug / "run" / "sock"
        states = json.loads((status / "init-status.json").read_text())["daemons"]
        print("  bundle daemons: " + ", ".join(f"{d['name']} {d['state']}" for d in states))
        print(f"  total     {total:7.1f} MiB   target <= 100 MiB: {verdict(total <= 100)}")
        return total
    finally:
        proc.terminate()
        proc.wait()


def _ready(env: dict[str, str], containers: list[Any]) -> bool:
    slug = containers[0].labels["bot-bottle.slug"]  # type: ignore[attr-defined]
    sock = Path(env["BOT_BOTTLE_HOME"]) / "state" / slug / "run" / "sock"
    return (sock / "bundle.ready").exists() and (sock / "agent.ready").exists()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--compare", type=Path, help="another source tree, run alternately")
    args = ap.parse_args()
    client = docker.from_env()
    print(f"load average at start: {load()} (2 cores here, shared with other work)")
    with tempfile.TemporaryDirectory(prefix="bb-bench-") as tmp:
        env = bench_env(tmp)
        _run(env, "init")
        print("warming images (first run may build them) ...", flush=True)
        other = {**env, "PYTHONPATH": tree_path(args.compare)} if args.compare else None
        for e in (env, other) if other else (env,):
            _run(e, "run", "demo", "--", "true")
            _run(e, "run", "demo", "--", "true")

        image = base_image()
        base, walls, phases = [], [], []
        other_walls, other_phases = [], []
        cpus: list[float] = []
        other_cpus: list[float] = []
        # Interleaved, so all see the same load.
        for i in range(args.runs):
            t = time.monotonic()
            subprocess.run(["docker", "run", "--rm", image, "true"], check=True)
            base.append(time.monotonic() - t)
            if other is not None and i % 2:
                wall, out = _run(other, "run", "demo", "--timings", "--", "true")
                other_walls.append(wall)
                other_phases.append(timings(out))
                other_cpus.append(LAST_CPU[0])
            wall, out = _run(env, "run", "demo", "--timings", "--", "true")
            walls.append(wall)
            phases.append(timings(out))
            cpus.append(LAST_CPU[0])
            if other is not None and not i % 2:
                wall, out = _run(other, "run", "demo", "--timings", "--", "true")
                other_walls.append(wall)
                other_phases.append(timings(out))
                other_cpus.append(LAST_CPU[0])
        med = {k: statistics.median(p.get(k, 0.0) for p in phases) for k in phases[0]}
        wall, base_med = statistics.median(walls), statistics.median(base)
        print(f"\nbot-bottle run demo -- true, {args.runs} runs (medians):")
        shown = 0.0
        for k in PARTS:
            print(f"  {k:22} {med.get(k, 0):6.2f} s")
            shown += med.get(k, 0)
        rest = med["launch"] - sum(med.get(k, 0) for k in ("images", "files", "containers"))
        rows = [
            ("launch, rest (CA copy)", rest),
            ("provision", med["provision"]),
            ("sidecars_ready (wait)", med.get("sidecars_ready", 0)),
            ("agent (true)", med["agent"]),
            ("teardown", med["teardown"]),
        ]
        for k, v in rows:
            print(f"  {k:22} {v:6.2f} s")
            shown += v
        print(f"  {'exit and unaccounted':22} {wall - shown:6.2f} s")
        print(f"  ready (to the agent)   {med['ready']:6.2f} s")
        ratio = wall / base_med
        print(f"  wall                   {wall:6.2f} s   target <= 2.0 s: {verdict(wall <= 2.0)}")
        print(f"  baseline docker run --rm {image} true: {base_med:.2f} s; "
              f"ratio {ratio:.1f}x   target <= 7x: {verdict(ratio <= 7)}")  # fmt: skip
        print(f"  launcher CPU (user+sys) {statistics.median(cpus):5.2f} s")
        print(f"  teardown               {med['teardown']:6.2f} s   target <= 0.4 s: "
              f"{verdict(med['teardown'] <= 0.4)}")  # fmt: skip
        if other is not None:
            o_wall = statistics.median(other_walls)
            o_med = {k: statistics.median(p.get(k, 0.0) for p in other_phases)
                     for k in other_phases[0]}  # fmt: skip
            print(f"\n{args.compare} (alternated with the runs above, medians):")
            print("  " + " ".join(f"{k}={v:.2f}" for k, v in o_med.items()))
            print(f"  wall {o_wall:.2f} s ({o_wall / base_med:.1f}x the baseline), teardown "
                  f"{o_med['teardown']:.2f} s")  # fmt: skip
            print(f"  launcher CPU (user+sys) {statistics.median(other_cpus):.2f} s")
            print(f"  this tree / that tree, wall: {wall / o_wall:.2f}, launcher CPU: "
                  f"{statistics.median(cpus) / statistics.median(other_cpus):.2f}")  # fmt: skip
        idle_memory(env, client, f"bench-idle-{os.getpid()}")
    print(f"\nload average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
