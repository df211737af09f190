"""Throughput of a 200 MB download through the egress proxy vs direct.

curl downloads the same body from the same local HTTPS upstream, directly
(``--resolve`` to 127.0.0.1) and through the proxy, alternating, best of N.
Target (issue 4): proxied >= 0.7x direct. Also reports the proxy's peak RSS growth.

    .venv/bin/python bench/egress_throughput.py [--mb 200] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from _egress_common import HOST, Setup, egress_setup

# e.g. CURL_EXTRA=--http1.1 to compare protocols between curl and the proxy.
CURL_EXTRA = os.environ.get("CURL_EXTRA", "").split()


def curl(s: Setup, size: int, proxied: bool) -> float:
    port = s.upstream.https_port
    url = f"https://{HOST}:{port}/big?n={size}"
    if proxied:
        extra = ["--proxy", s.egress.proxy_url, "--cacert", str(s.ca.agent_cert)]
    else:
        extra = ["--resolve", f"{HOST}:{port}:127.0.0.1", "--cacert", str(s.pki.ca_cert)]
    out = subprocess.run(
        [
            "curl",
            *CURL_EXTRA,
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{speed_download}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if int(out[0]) != size:
        raise RuntimeError(f"short download: {out[0]} of {size}")
    return float(out[1]) / 1e6  # MB/s


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    with egress_setup() as s:
        base_hwm = s.egress.hwm_kib()
        direct, proxied = [], []
        cpu = 0.0
        for _ in range(args.runs):
            direct.append(curl(s, size, proxied=False))
            before = cpu_seconds(s.egress.proc.pid)
            proxied.append(curl(s, size, proxied=True))
            cpu += cpu_seconds(s.egress.proc.pid) - before
        growth = (s.egress.hwm_kib() - base_hwm) / 1024
    result = {
        "direct_mb_s": max(direct),
        "proxied_mb_s": max(proxied),
        "ratio": max(proxied) / max(direct),
        "proxy_peak_rss_growth_mib": growth,
        "proxy_cpu_s_per_gib": cpu / (args.runs * size / 2**30),
        "cpus": os.cpu_count() or 0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.mb} MiB download over HTTPS, best of {args.runs}")
    print(f"direct   {result['direct_mb_s']:8.1f} MB/s")
    print(f"proxied  {result['proxied_mb_s']:8.1f} MB/s")
    print(f"ratio    {result['ratio']:8.2f}x   (target >= 0.7x)")
    print(f"proxy peak RSS growth during the downloads: {growth:.1f} MiB")
    print(
        f"proxy CPU: {result['proxy_cpu_s_per_gib']:.2f} s per GiB "
        f"(the proxy is CPU-bound; {result['cpus']} CPUs shared with curl and the upstream)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
