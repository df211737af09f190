"""What refused and capped uploads cost the egress daemon, against an allowed one.

One daemon, a local HTTPS upstream, two routes: one with outbound DLP (bodies
buffered for scanning, capped at 32 MiB), one without (bodies stream). Same
run, same client (httpx, which sends the whole body before it reads the
answer), an upload of --mib MiB each:

- baseline: a chunked upload on the route without DLP (streamed, forwarded);
- over the cap: the same chunked upload on the DLP route (413 as the buffer
  passes 32 MiB, the rest read and dropped);
- no route: the same upload to a host that is not a route (403 on the
  headers, the body read and dropped);

plus how long a client that waits for the answer before sending its body
waits for the 403 (nothing of the body sent). Prints wall time and the
daemon's peak RSS growth for each, and the ratios to the baseline.

    .venv/bin/python bench/egress_bodies.py [--mib 256] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
from bot_bottle_testkit.egress import (
    EgressProcess,
    LocalUpstream,
    make_test_pki,
    start_egress,
)

from bot_bottle.egress.ca import generate_bottle_ca
from bot_bottle.egress.render import RouteSpec, render_egress_config

SCANNED = "dlp.upstream.test"
PLAIN = "plain.upstream.test"
UNLISTED = "unlisted.upstream.test"
_PIECE = bytes(range(256)) * 1024  # 256 KiB


def chunks(total: int) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = _PIECE[: min(left, len(_PIECE))]
        left -= len(piece)
        yield piece


def upload(
    egress: EgressProcess, client: httpx.Client, url: str, size: int
) -> tuple[int, float, float]:
    """(status, seconds, peak RSS growth in MiB) of one chunked upload."""
    egress.reset_hwm()
    before = egress.hwm_kib()
    t0 = time.perf_counter()
    status = client.post(url, content=chunks(size)).status_code
    seconds = time.perf_counter() - t0
    return status, seconds, (egress.hwm_kib() - before) / 1024


def answer_wait_ms(egress: EgressProcess, port: int) -> float:
    """Headers of a 1 GiB upload to a non-route; time until the 403 arrives."""
    target = f"{UNLISTED}:{port}"
    with socket.create_connection(("127.0.0.1", egress.port), timeout=30) as sock:
        t0 = time.perf_counter()
        sock.sendall(
            f"POST http://{target}/up HTTP/1.1\r\nHost: {target}\r\n"
            "Content-Length: 1073741824\r\n\r\n".encode()
        )
        head = sock.recv(65536)
        ms = (time.perf_counter() - t0) * 1000
    if not head.startswith(b"HTTP/1.1 403"):
        raise RuntimeError(f"unexpected answer: {head[:100]!r}")
    return ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.mib << 20
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="egress-bodies-bench-") as tmp_s:
        tmp = Path(tmp_s)
        pki = make_test_pki(tmp / "pki", [SCANNED, PLAIN, UNLISTED])
        upstream = LocalUpstream(pki, tmp / "git").start()
        ca = generate_bottle_ca(tmp / "ca")
        ports = (upstream.https_port, upstream.http_port)
        config, env = render_egress_config(
            [
                RouteSpec(SCANNED, ports=ports, outbound_detectors=("known_secrets",)),
                RouteSpec(PLAIN, ports=ports),
            ],
            upstream_ca=str(pki.ca_cert),
            extra_hosts=dict.fromkeys((SCANNED, PLAIN, UNLISTED), "127.0.0.1"),
        )
        config.write(tmp / "egress.json")
        egress = start_egress(
            tmp / "egress.json",
            ca.confdir,
            env={**{k: v.reveal() for k, v in env.items()}, "BOT_BOTTLE_HOME": str(tmp / "home")},
        )
        try:
            ctx = ssl.create_default_context(cafile=str(ca.agent_cert))
            with httpx.Client(
                proxy=egress.proxy_url, verify=ctx, trust_env=False, timeout=300
            ) as c:
                port = upstream.https_port
                c.post(f"https://{SCANNED}:{port}/warm", content=b"warm").raise_for_status()
                for name, url, expect in (
                    ("allowed, streamed (baseline)", f"https://{PLAIN}:{port}/up", 200),
                    ("over the DLP cap (413)", f"https://{SCANNED}:{port}/up", 413),
                    ("no route (403)", f"https://{UNLISTED}:{port}/up", 403),
                ):
                    status, seconds, growth = upload(egress, c, url, size)
                    if status != expect:
                        raise RuntimeError(f"{name}: status {status}, expected {expect}")
                    results[name] = {"seconds": seconds, "peak_rss_growth_mib": growth}
            waits = sorted(answer_wait_ms(egress, upstream.http_port) for _ in range(20))
            results["403 before any body byte"] = {"p50_ms": waits[len(waits) // 2]}
        finally:
            egress.stop()
            upstream.stop()
    base = results["allowed, streamed (baseline)"]
    for r in results.values():
        if "seconds" in r:
            r["time_ratio"] = r["seconds"] / base["seconds"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.mib} MiB chunked uploads through the egress daemon (httpx, HTTPS)")
    for name, r in results.items():
        if "seconds" in r:
            print(
                f"  {name:30} {r['seconds']:6.2f} s ({r['time_ratio']:.2f}x baseline)"
                f"  peak RSS +{r['peak_rss_growth_mib']:.1f} MiB"
            )
    wait = results["403 before any body byte"]["p50_ms"]
    print(f"  403 to a client waiting before its body: p50 {wait:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
