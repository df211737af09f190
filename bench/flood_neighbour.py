"""A flood in one bottle, and what a neighbouring bottle feels of it.

    .venv/bin/python bench/flood_neighbour.py [--samples 200] [--connections 2000] [--calls 5000]

Two demo bottles (``bot-bottle init``'s shell agent) on this engine. In the
neighbour, ``curl http://_egress.local/routes`` (agent -> relay -> bundle
relay -> egress, no upstream) is timed ``--samples`` times: first while the
other bottle idles (the baseline, same run), then while the other bottle's
agent holds ``--connections`` proxy connections open and sends ``--calls``
supervise calls (50 at a time). Prints median and p95 of both and their
ratio, plus the flooded bundle's peak memory. Traffic goes only to each
bottle's own sidecars. Figures, not assertions (timings depend on the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BB = [sys.executable, "-m", "bot_bottle"]

TIMED = """for i in $(seq {n}); do
  curl -sS -m 30 -o /dev/null -w '%{{time_total}}\\n' http://_egress.local/routes || echo fail
done"""

FLOOD = """
fds=()
for i in $(seq {conns}); do
  exec {{fd}}<>/dev/tcp/127.0.0.1/8080 || break
  printf 'CONNECT _egress.local:80 HTTP/1.1\\r\\nHost: _egress.local:80\\r\\n\\r\\n' >&$fd
  fds+=($fd)
done
body='{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{}}}}'
for i in $(seq {calls}); do
  printf 'url = "http://127.0.0.1:8765/mcp"\\noutput = "/dev/null"\\n'
done > /tmp/urls
curl -s -Z --parallel-max 50 -m 60 -K /tmp/urls -w '%{{http_code}}\\n' \\
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
  -d "$body" | sort | uniq -c
echo "held ${{#fds[@]}}"
"""


PEAK = (
    "cat /sys/fs/cgroup/memory.peak 2>/dev/null || "
    "cat /sys/fs/cgroup/memory/memory.max_usage_in_bytes"
)


def _start(env: dict[str, str], label: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*BB, "run", "demo", "--label", label, "--", "sleep", "3600"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _agent(client: docker.DockerClient, label: str) -> Any:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        flt: dict[str, Any] = {"label": ["bot-bottle.role=agent", f"bot-bottle.label={label}"]}
        found = client.containers.list(filters=flt)
        if found:
            agent = found[0]
            slug = agent.labels["bot-bottle.slug"]
            ready = Path(os.environ.get("BB_HOME", "")) / "state" / slug / "run/sock/agent.ready"
            if ready.exists():
                return agent
        time.sleep(0.5)
    raise SystemExit(f"bottle {label} never became ready")


def _sh(container: Any, script: str) -> str:
    r = container.exec_run(["bash", "-c", script], user="agent")
    return r.output.decode("utf-8", "replace")


def _times(out: str) -> list[float]:
    return [float(x) for x in out.split() if x.replace(".", "", 1).isdigit()]


def _stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[int(len(xs) * 0.95) - 1] if xs else float("nan")
    return f"median {statistics.median(xs) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="bb-flood-") as tmp:
        home = Path(tmp) / "home"
        env = dict(os.environ, BOT_BOTTLE_HOME=str(home))
        os.environ["BB_HOME"] = str(home)
        if HOST_CA.exists():
            env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
        subprocess.run([*BB, "init"], env=env, check=True, capture_output=True)
        procs = [_start(env, "flooder"), _start(env, "neighbour")]
        try:
            flooder, neighbour = _agent(client, "flooder"), _agent(client, "neighbour")
            idle = _times(_sh(neighbour, TIMED.format(n=args.samples)))
            flood_out: list[str] = []
            t = threading.Thread(
                target=lambda: flood_out.append(
                    _sh(flooder, FLOOD.format(conns=args.connections, calls=args.calls))
                )
            )
            t.start()
            time.sleep(2)  # the connections are being opened
            busy = _times(_sh(neighbour, TIMED.format(n=args.samples)))
            t.join()
            slug = flooder.labels["bot-bottle.slug"]
            bundle = client.containers.get(f"bb-{slug}-sidecars")
            peak: Any = bundle.exec_run(["sh", "-c", PEAK])
            print(f"neighbour idle:    {_stats(idle)}")
            print(f"neighbour flooded: {_stats(busy)}")
            print(
                f"ratio (median): {statistics.median(busy) / statistics.median(idle):.2f}x; "
                f"flooder: {flood_out[0].split()[-1] if flood_out else '?'} connections held, "
                f"bundle peak {int(peak.output.split()[0]) / 2**20:.0f} MiB"
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
