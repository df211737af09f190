"""Added latency of the egress proxy per request (keep-alive) and small-request RPS.

Same-run comparison against a direct connection to the same local HTTPS
upstream: one keep-alive client each, sequential small GETs, then
``--clients`` keep-alive clients at once. Targets (issue #21: an agent makes
many small API calls, each must stay quick): added p50 <= 1.5 ms, added p99
<= 8 ms, small-request throughput >= 0.4x direct. Also printed: the egress
process's CPU time per request (from /proc; less sensitive to the machine's
load than wall time) and the load average before and after.

    .venv/bin/python bench/egress_latency.py [--requests 2000] [--clients 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
from _egress_common import HOST, Setup, egress_setup


def run(client: httpx.Client, url: str, n: int, headers: dict[str, str]) -> list[float]:
    for _ in range(50):  # warm up: connection, TLS session, caches
        client.get(url, headers=headers).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(url, headers=headers).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)


def run_concurrent(
    make: Callable[[], httpx.Client], url: str, n: int, clients: int, headers: dict[str, str]
) -> float:
    """Requests per second with ``clients`` keep-alive clients, ``n`` requests in all."""
    pool = [make() for _ in range(clients)]
    try:
        for c in pool:
            for _ in range(10):
                c.get(url, headers=headers).raise_for_status()
        start = threading.Barrier(clients + 1)

        def work(c: httpx.Client) -> None:
            start.wait()
            for _ in range(n // clients):
                c.get(url, headers=headers).raise_for_status()

        threads = [threading.Thread(target=work, args=(c,)) for c in pool]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return (n // clients) * clients / (time.perf_counter() - t0)
    finally:
        for c in pool:
            c.close()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def measure(s: Setup, n: int, clients: int) -> dict[str, float]:
    proxied_ctx = ssl.create_default_context(cafile=str(s.ca.agent_cert))
    direct_ctx = ssl.create_default_context(cafile=str(s.pki.ca_cert))
    # The upstream's certificate names HOST; connect to 127.0.0.1 with that SNI.
    direct_ctx.check_hostname = False
    path = "/v1/small"
    direct_url = f"https://127.0.0.1:{s.upstream.https_port}{path}"
    with httpx.Client(verify=direct_ctx, trust_env=False) as c:
        direct = run(c, direct_url, n, {"Host": HOST})
    pid = s.egress.proc.pid
    with httpx.Client(proxy=s.egress.proxy_url, verify=proxied_ctx, trust_env=False) as c:
        cpu0 = cpu_seconds(pid)
        proxied = run(c, s.url + path, n, {})
        cpu_ms = (cpu_seconds(pid) - cpu0) * 1000 / (n + 50)
    direct_conc = run_concurrent(
        lambda: httpx.Client(verify=direct_ctx, trust_env=False),
        direct_url,
        n,
        clients,
        {"Host": HOST},
    )
    proxied_conc = run_concurrent(
        lambda: httpx.Client(proxy=s.egress.proxy_url, verify=proxied_ctx, trust_env=False),
        s.url + path,
        n,
        clients,
        {},
    )
    return {
        "direct_p50_ms": pct(direct, 0.5),
        "direct_p99_ms": pct(direct, 0.99),
        "proxied_p50_ms": pct(proxied, 0.5),
        "proxied_p99_ms": pct(proxied, 0.99),
        "added_p50_ms": pct(proxied, 0.5) - pct(direct, 0.5),
        "added_p99_ms": pct(proxied, 0.99) - pct(direct, 0.99),
        "direct_rps": 1000 * n / sum(direct),
        "proxied_rps": 1000 * n / sum(proxied),
        "rps_ratio": sum(direct) / sum(proxied),
        "egress_cpu_ms_per_request": cpu_ms,
        "clients": clients,
        "direct_concurrent_rps": direct_conc,
        "proxied_concurrent_rps": proxied_conc,
        "concurrent_rps_ratio": proxied_conc / direct_conc,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with egress_setup() as s:
        result = measure(s, args.requests, args.clients)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"load average (1 min): {load_before:.1f} before, {result['load_after']:.1f} after")
    print(f"requests: {args.requests} sequential, keep-alive, HTTPS")
    print(f"direct   p50 {result['direct_p50_ms']:6.2f} ms  p99 {result['direct_p99_ms']:6.2f} ms")
    print(
        f"proxied  p50 {result['proxied_p50_ms']:6.2f} ms  p99 {result['proxied_p99_ms']:6.2f} ms"
    )
    print(
        f"added    p50 {result['added_p50_ms']:6.2f} ms  p99 {result['added_p99_ms']:6.2f} ms"
        "   (targets: p50 <= 1.5 ms, p99 <= 8 ms)"
    )
    print(
        f"small-request RPS: direct {result['direct_rps']:.0f}, proxied "
        f"{result['proxied_rps']:.0f} (ratio {result['rps_ratio']:.2f}x; target >= 0.4x)"
    )
    print(
        f"{args.clients} clients at once: direct {result['direct_concurrent_rps']:.0f}/s, "
        f"proxied {result['proxied_concurrent_rps']:.0f}/s "
        f"(ratio {result['concurrent_rps_ratio']:.2f}x)"
    )
    print(f"egress CPU per request: {result['egress_cpu_ms_per_request']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
