"""Added latency of the egress proxy per request (keep-alive) and small-request RPS.

Same-run comparison against a direct connection to the same local HTTPS
upstream: one keep-alive client each, sequential small GETs. Targets (an
agent makes many small API calls, each must stay quick): added p50 <= 5 ms, added p99 <= 25 ms.

    .venv/bin/python bench/egress_latency.py [--requests 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import ssl
import time

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


def pct(sorted_ms: list[float], p: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def measure(s: Setup, n: int) -> dict[str, float]:
    proxied_ctx = ssl.create_default_context(cafile=str(s.ca.agent_cert))
    direct_ctx = ssl.create_default_context(cafile=str(s.pki.ca_cert))
    # The upstream's certificate names HOST; connect to 127.0.0.1 with that SNI.
    direct_ctx.check_hostname = False
    path = "/v1/small"
    with httpx.Client(verify=direct_ctx, trust_env=False) as c:
        direct = run(c, f"https://127.0.0.1:{s.upstream.https_port}{path}", n, {"Host": HOST})
    with httpx.Client(proxy=s.egress.proxy_url, verify=proxied_ctx, trust_env=False) as c:
        proxied = run(c, s.url + path, n, {})
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
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with egress_setup() as s:
        result = measure(s, args.requests)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"requests: {args.requests} sequential, keep-alive, HTTPS")
    print(f"direct   p50 {result['direct_p50_ms']:6.2f} ms  p99 {result['direct_p99_ms']:6.2f} ms")
    print(
        f"proxied  p50 {result['proxied_p50_ms']:6.2f} ms  p99 {result['proxied_p99_ms']:6.2f} ms"
    )
    print(
        f"added    p50 {result['added_p50_ms']:6.2f} ms  p99 {result['added_p99_ms']:6.2f} ms"
        "   (targets: p50 <= 5 ms, p99 <= 25 ms)"
    )
    print(
        f"small-request RPS: direct {result['direct_rps']:.0f}, proxied "
        f"{result['proxied_rps']:.0f} (ratio {result['rps_ratio']:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
