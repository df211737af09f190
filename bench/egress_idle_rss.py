"""Idle RSS of the egress daemon (mitmproxy + addon), after start and after traffic.

Target (one daemon per bottle, several bottles on a small machine): <= 150 MB.
Baseline in the same run: a bare Python interpreter that imports nothing
(``python -c`` sleeping).

    .venv/bin/python bench/egress_idle_rss.py [--json]
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
from _egress_common import egress_setup


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.0)
        bare_mib = rss_kib(bare.pid) / 1024
    finally:
        bare.kill()
        bare.wait()
    with egress_setup() as s:
        time.sleep(1.0)
        idle_mib = s.egress.rss_kib() / 1024
        ctx = ssl.create_default_context(cafile=str(s.ca.agent_cert))
        with httpx.Client(proxy=s.egress.proxy_url, verify=ctx, trust_env=False) as c:
            for _ in range(500):
                c.get(s.url + "/v1/x").raise_for_status()
        time.sleep(1.0)
        after_mib = s.egress.rss_kib() / 1024
    result = {
        "bare_python_mib": bare_mib,
        "idle_mib": idle_mib,
        "idle_after_500_requests_mib": after_mib,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"bare python interpreter      {bare_mib:6.1f} MiB")
    print(f"egress daemon, idle          {idle_mib:6.1f} MiB   (target <= 150 MB)")
    print(f"egress daemon, after 500 req {after_mib:6.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
