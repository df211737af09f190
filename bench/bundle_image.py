"""Sidecar bundle image: build time cold and warm, image size, idle RSS.

* cold: wheelhouse + ``docker build --no-cache`` (no layer cache);
* warm: ``ensure_bundle_image`` when the content tag already exists (the
  cache hit every launch pays), median of repeated runs;
* size: the image's size as the engine reports it, and the base image's
  size as the baseline it is built on;
* idle RSS: the bundle running init with all three daemons for a while,
  summed over every process in the container (VmRSS), against the 200 MB
  target and against an idle ``python3`` in the same image as the baseline.

Egress and git-gate run as stand-ins made of the programs they are built on
(``mitmdump``, ``git daemon``) until their daemons land; supervise is real.

    .venv/bin/python bench/bundle_image.py [--skip-cold] [--warm-runs 5] [--idle 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bot_bottle_sidecars.bundle import DEFAULT_BASE_IMAGE

from bot_bottle_docker.images import ensure_bundle_image

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
RSS_TARGET_MB = 200.0
LABEL = "org.bot-bottle.bench=bundle-image"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def plan() -> dict[str, Any]:
    return {
        "grace_seconds": 5,
        "daemons": [
            {
                "name": "egress",
                "argv": ["mitmdump", "--listen-port", "8080", "--set", "confdir=/tmp/mitm", "-q"],
                "env": ["EGRESS_TOKEN_*"],
                "forward_sighup": True,
            },
            {
                "name": "git-gate",
                "argv": [
                    "git",
                    "daemon",
                    "--export-all",
                    "--base-path=/srv",
                    "--port=9418",
                    "/srv",
                ],
            },
            {
                "name": "supervise",
                "argv": [
                    "python",
                    "-m",
                    "bot_bottle_sidecars.supervise",
                    "--queue-dir",
                    "/var/lib/bot-bottle/queue",
                    "--bottle-slug",
                    "bench",
                ],
            },
        ],
    }


def container_rss_mb(
    name: str, labels: dict[int, str] | None = None
) -> tuple[float, dict[str, float]]:
    # Every process's VmRSS: the bundle's own accounting, free of the page
    # cache that cgroup memory figures include. Named by daemon where known.
    out = docker(
        "exec",
        name,
        "sh",
        "-c",
        "for s in /proc/[0-9]*/status; do "
        "awk '/^Name:/{n=$2} /^Pid:/{p=$2} /^VmRSS:/{print p, n, $2}' $s 2>/dev/null; done",
    )
    names = {1: "init", **(labels or {})}
    per: dict[str, float] = {}
    for line in out.splitlines():
        pid, proc, kb = line.split()
        if proc in ("sh", "awk"):
            continue
        key = names.get(int(pid), proc)
        per[key] = per.get(key, 0.0) + int(kb) / 1024
    return sum(per.values()), per


def idle_rss(tag: str, idle: float) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    net, bundle, baseline = (
        f"bb-bench-{suffix}",
        f"bb-bench-bundle-{suffix}",
        f"bb-bench-py-{suffix}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "init-plan.json").write_text(json.dumps(plan()))
        docker("network", "create", "--internal", "--label", LABEL, net)
        try:
            docker(
                "run", "-d", "--name", bundle, "--label", LABEL, "--network", net,
                "-e", "EGRESS_TOKEN_1=bench-token",
                "-v", f"{tmp}:/etc/bot-bottle:ro", tag,
            )  # fmt: skip
            docker(
                "run", "-d", "--name", baseline, "--label", LABEL, "--network", net,
                "--entrypoint", "python3", tag, "-c", "import time; time.sleep(3600)",
            )  # fmt: skip
            time.sleep(idle)
            status = json.loads(
                docker("exec", bundle, "python", "-m", "bot_bottle_sidecars.init", "ctl", "status")
            )
            running = [d["name"] for d in status["daemons"] if d["running"]]
            pids = {d["pid"]: d["name"] for d in status["daemons"] if d["pid"]}
            total, per = container_rss_mb(bundle, pids)
            base_total, _ = container_rss_mb(baseline)
        finally:
            subprocess.run(
                ["docker", "rm", "-f", bundle, baseline], capture_output=True, check=False
            )
            subprocess.run(["docker", "network", "rm", net], capture_output=True, check=False)
    return {
        "rss_mb": round(total, 1),
        "per_process_mb": {k: round(v, 1) for k, v in sorted(per.items())},
        "baseline_python_mb": round(base_total, 1),
        "running": running,
        "ratio_to_target": round(total / RSS_TARGET_MB, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds before measuring RSS")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ca = HOST_CA if HOST_CA.exists() else None
    results: dict[str, Any] = {}

    if not args.skip_cold:
        t0 = time.perf_counter()
        cold = ensure_bundle_image(extra_ca=ca, no_cache=True)
        results["cold_build_s"] = round(time.perf_counter() - t0, 1)
        tag = cold.tag
    else:
        tag = ensure_bundle_image(extra_ca=ca).tag

    warm = []
    for _ in range(args.warm_runs):
        t0 = time.perf_counter()
        result = ensure_bundle_image(extra_ca=ca)
        warm.append(time.perf_counter() - t0)
        assert not result.built and result.tag == tag
    results["warm_hit_ms"] = round(statistics.median(warm) * 1000)
    if "cold_build_s" in results:
        results["cold_over_warm"] = round(results["cold_build_s"] * 1000 / results["warm_hit_ms"])

    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag))
    base = int(docker("image", "inspect", "--format", "{{.Size}}", DEFAULT_BASE_IMAGE))
    results["image_mb"] = round(size / 1e6)
    results["base_image_mb"] = round(base / 1e6)
    results["image_over_base"] = round(size / base, 2)
    results["idle"] = idle_rss(tag, args.idle)
    results["tag"] = tag

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:>18}: {value}")
        verdict = "meets" if results["idle"]["rss_mb"] <= RSS_TARGET_MB else "MISSES"
        print(f"idle RSS {verdict} the {RSS_TARGET_MB:.0f} MB target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
