"""Throughput of a large download through the egress proxy vs direct.

curl downloads the same body from the same local HTTPS upstream, directly
(``--resolve`` to 127.0.0.1) and through the proxy, alternating, N runs.
Target (downloads through the proxy close to direct speed): proxied >= 0.7x
direct. Reports min/median of each, the proxy's CPU seconds per GiB (user +
system), the CPU the client and the upstream spend per GiB (what the proxy
competes with on a small machine), the load average before and after, and
the proxy's peak RSS growth.

    .venv/bin/python bench/egress_throughput.py [--mb 200] [--runs 5] [--http1.1]
        [--inbound-dlp] [--body bytes|random|text] [--json]

``--inbound-dlp`` gives the route the built-in inbound detector (prompt_injection), so
the response is scanned as it streams. Other engineers share this machine's
cores: compare figures of the same session only, with their load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
from pathlib import Path

from _egress_common import HOST, Setup, egress_setup

# e.g. CURL_EXTRA=--limit-rate=100M for other curl flags.
CURL_EXTRA = os.environ.get("CURL_EXTRA", "").split()


def curl(s: Setup, size: int, proxied: bool, extra_args: list[str], fill: str = "bytes") -> float:
    port = s.upstream.https_port
    url = f"https://{HOST}:{port}/big?n={size}&fill={fill}"
    if proxied:
        extra = ["--proxy", s.egress.proxy_url, "--cacert", str(s.ca.agent_cert)]
    else:
        extra = ["--resolve", f"{HOST}:{port}:127.0.0.1", "--cacert", str(s.pki.ca_cert)]
    out = subprocess.run(
        [
            "curl",
            *CURL_EXTRA,
            *extra_args,
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


def own_and_children_cpu() -> tuple[float, float]:
    """(this process: the upstream's threads; reaped children: curl) in CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--http1.1", dest="http11", action="store_true", help="curl --http1.1")
    parser.add_argument("--inbound-dlp", action="store_true")
    parser.add_argument(
        "--body",
        choices=("bytes", "random", "text"),
        default="bytes",
        help="bytes 0..255 repeated (default), random (like an archive), text (source code)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.mb * 1024 * 1024
    gib = size / 2**30
    curl_args = ["--http1.1"] if args.http11 else []
    detectors = ("prompt_injection",) if args.inbound_dlp else ()
    load_before = loadavg()
    with egress_setup(inbound_detectors=detectors) as s:
        curl(s, 1 << 20, True, curl_args)  # connection set-up paths warmed
        base_hwm = s.egress.hwm_kib()
        direct: list[float] = []
        proxied: list[float] = []
        proxy_cpu: list[float] = []
        upstream_cpu: list[float] = []
        client_cpu: list[float] = []
        for _ in range(args.runs):
            direct.append(curl(s, size, False, curl_args, args.body))
            before = cpu_seconds(s.egress.proc.pid)
            own0, kids0 = own_and_children_cpu()
            proxied.append(curl(s, size, True, curl_args, args.body))
            own1, kids1 = own_and_children_cpu()
            proxy_cpu.append((cpu_seconds(s.egress.proc.pid) - before) / gib)
            upstream_cpu.append((own1 - own0) / gib)
            client_cpu.append((kids1 - kids0) / gib)
        growth = (s.egress.hwm_kib() - base_hwm) / 1024
    ratios = [p / d for p, d in zip(proxied, direct, strict=True)]
    result = {
        "mb": args.mb,
        "runs": args.runs,
        "client_http": "1.1" if args.http11 else "2 (curl default)",
        "inbound_dlp": args.inbound_dlp,
        "body": args.body,
        "direct_mb_s": {"min": min(direct), "median": statistics.median(direct)},
        "proxied_mb_s": {"min": min(proxied), "median": statistics.median(proxied)},
        "ratio": {"min": min(ratios), "median": statistics.median(ratios)},
        "proxy_cpu_s_per_gib": {"min": min(proxy_cpu), "median": statistics.median(proxy_cpu)},
        "upstream_cpu_s_per_gib": statistics.median(upstream_cpu),
        "client_cpu_s_per_gib": statistics.median(client_cpu),
        "proxy_peak_rss_growth_mib": growth,
        "loadavg_before_after": [load_before, loadavg()],
        "cpus": os.cpu_count() or 0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{args.mb} MiB download over HTTPS, {args.runs} runs, client HTTP/"
        f"{result['client_http']}, inbound DLP {'on' if args.inbound_dlp else 'off'}, "
        f"body {args.body}"
    )
    print("                  min    median")
    for key, label in (
        ("direct_mb_s", "direct MB/s"),
        ("proxied_mb_s", "proxied MB/s"),
        ("ratio", "ratio (>=0.7)"),
        ("proxy_cpu_s_per_gib", "proxy CPU-s/GiB"),
    ):
        v = result[key]
        print(f"{label:15s} {v['min']:7.2f} {v['median']:8.2f}")
    print(
        f"per GiB proxied (median): upstream {result['upstream_cpu_s_per_gib']:.2f} CPU-s, "
        f"curl {result['client_cpu_s_per_gib']:.2f} CPU-s"
    )
    print(f"proxy peak RSS growth during the downloads: {growth:.1f} MiB")
    print(
        f"load average before/after: {load_before:.2f} / {result['loadavg_before_after'][1]:.2f}"
        f" ({result['cpus']} CPUs, shared)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
