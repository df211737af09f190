"""Commit and resume times for the demo bottle, against a fresh start in the same run.

    .venv/bin/python bench/commit_resume.py [--runs 3] [--work-mb 20] [--json]

A throwaway BOT_BOTTLE_HOME with the demo agent (``bot-bottle init``);
images are warmed first. Each run: a fresh ``run demo -- true`` (baseline),
a bottle whose agent writes ``--work-mb`` MiB into its home is committed
(``bot-bottle commit``: export, filter, scan what changed, import), and the
snapshot resumed (``resume NAME -- true``). "ready" is the launcher's own
phase timing (launch to sidecars answering, provisioning done).
Target (resuming must cost about what a fresh start does): resume ready within 1 s of a fresh start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
WAIT = (
    "touch /tmp/bb-ready; while [ ! -e /tmp/bb-stop ]; do sleep 0.1; done; "
    'exit "$(cat /tmp/bb-stop)"'
)


def _run(env: dict[str, str], *args: str) -> tuple[float, str]:
    t = time.monotonic()
    r = subprocess.run([*BB, *args], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"bot-bottle {' '.join(args)} failed: {r.stderr[-800:]}")
    return time.monotonic() - t, r.stdout + r.stderr


def _timings(text: str) -> dict[str, float]:
    m = re.search(r"^timings: (.*)$", text, re.M)
    if not m:
        return {}
    return {k: float(v.rstrip("s")) for k, v in (p.split("=") for p in m.group(1).split())}


def _bottle_with_work(
    env: dict[str, str], client: docker.DockerClient, home_label: str, work_mb: int
) -> tuple[subprocess.Popen[str], Any]:
    flt: dict[str, Any] = {"label": [f"bot-bottle.home={home_label}", "bot-bottle.role=agent"]}
    before = {c.id for c in client.containers.list(all=True, filters=flt)}
    proc = subprocess.Popen(
        [*BB, "run", "demo", "--", "sh", "-c", WAIT],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bottle did not come up: {proc.communicate()[1][-800:]}")
        for c in client.containers.list(filters=flt):
            ready = c.exec_run(["test", "-e", "/tmp/bb-ready"])  # noqa: S108 - guest path
            if c.id not in before and ready.exit_code == 0:
                # Work worth keeping: files in the agent's home, like an install.
                script = (
                    f"mkdir -p ~/.local/lib/work && for i in $(seq {work_mb}); do "
                    "head -c 1048576 /dev/urandom | base64 > ~/.local/lib/work/f$i; done"
                )
                c.exec_run(["sh", "-c", script], user="agent")
                return proc, c
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work-mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="bb-bench-") as tmp:
        home = Path(tmp) / "home"
        env = dict(os.environ, BOT_BOTTLE_HOME=str(home))
        if HOST_CA.exists():
            env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
        from bot_bottle.state import home_id

        label = home_id(home / "state")
        _run(env, "init")
        print("warming images (first run may build them) ...", file=sys.stderr, flush=True)
        _run(env, "run", "demo", "--", "true")

        fresh: list[dict[str, float]] = []
        commits: list[float] = []
        resumed: list[dict[str, float]] = []
        try:
            for i in range(args.runs):
                wall, out = _run(env, "run", "demo", "--timings", "--", "true")
                fresh.append({"wall": wall, **_timings(out)})

                proc, agent = _bottle_with_work(env, client, label, args.work_mb)
                slug = agent.labels["bot-bottle.slug"]
                wall, _ = _run(env, "commit", slug, "--name", f"bench-{i}")
                commits.append(wall)
                agent.exec_run(["sh", "-c", "echo 0 > /tmp/bb-stop"])
                proc.wait(timeout=120)

                wall, out = _run(env, "resume", f"bench-{i}", "--timings", "--", "true")
                resumed.append({"wall": wall, **_timings(out)})
        finally:
            for i in range(args.runs):
                subprocess.run(
                    [*BB, "snapshots", "rm", f"bench-{i}"],
                    env=env,
                    capture_output=True,
                    check=False,
                )

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, float("nan")) for r in rows)

    result = {
        "runs": args.runs,
        "work_mb": args.work_mb,
        "fresh_ready_s": med(fresh, "ready"),
        "fresh_wall_s": med(fresh, "wall"),
        "commit_wall_s": statistics.median(commits),
        "resume_ready_s": med(resumed, "ready"),
        "resume_wall_s": med(resumed, "wall"),
    }
    result["resume_minus_fresh_ready_s"] = result["resume_ready_s"] - result["fresh_ready_s"]
    result["target_met"] = result["resume_minus_fresh_ready_s"] <= 1.0
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        r = result
        print(f"fresh start   ready {r['fresh_ready_s']:6.2f} s  (wall {r['fresh_wall_s']:.2f} s)")
        print(f"commit        wall  {r['commit_wall_s']:6.2f} s  ({args.work_mb} MiB of new work)")
        print(
            f"resume        ready {r['resume_ready_s']:6.2f} s  (wall {r['resume_wall_s']:.2f} s)"
        )
        verdict = "met" if result["target_met"] else "MISSED"
        print(f"resume - fresh ready: {result['resume_minus_fresh_ready_s']:+.2f} s "
              f"(target <= +1 s: {verdict})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
