"""Cost of outbound DLP on LLM-style requests through the egress daemon.

One daemon, two routes to the same local HTTPS upstream: one scanned by the
built-in outbound detectors (known_secrets + token_patterns, through core's
scan pipeline), one with DLP off. Same run, same client, keep-alive POSTs of
an LLM-style JSON body of each size, plain and gzip-compressed; prints the
median latency of each and the ratio scanned / unscanned.

    .venv/bin/python bench/egress_dlp.py [--requests 200] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
from bot_bottle_testkit.egress import LocalUpstream, make_test_pki, start_egress

from bot_bottle.egress.ca import generate_bottle_ca
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.secrets import Secret

SCANNED = "dlp.upstream.test"
PLAIN = "plain.upstream.test"
SIZES = (4 << 10, 64 << 10, 512 << 10)


def llm_body(size: int) -> bytes:
    """A chat request whose tool results hold source code, about ``size`` bytes."""
    code = (
        "def parse(text: str) -> list[str]:\n"
        '    """Split lines, drop blanks (see issue #42)."""\n'
        "    return [line.strip() for line in text.splitlines() if line.strip()]\n\n"
    )
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Refactor the parser; keep the tests green."}
    ]
    i = 0
    while len(json.dumps(messages)) < size:
        i += 1
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{i:024d}", "content": code * 8}
                ],
            }
        )
    doc = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": True, "messages": messages}
    return json.dumps(doc).encode()


def median_ms(
    client: httpx.Client, url: str, body: bytes, headers: dict[str, str], n: int
) -> float:
    for _ in range(5):
        client.post(url, content=body, headers=headers).raise_for_status()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.post(url, content=body, headers=headers).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="egress-dlp-bench-") as tmp_s:
        tmp = Path(tmp_s)
        pki = make_test_pki(tmp / "pki", [SCANNED, PLAIN])
        upstream = LocalUpstream(pki, tmp / "git").start()
        ca = generate_bottle_ca(tmp / "ca")
        token = Secret("bench-token-value-0123456789")
        config, env = render_egress_config(
            [
                RouteSpec(
                    SCANNED,
                    ports=(upstream.https_port,),
                    auth_scheme="Bearer",
                    token=token,
                    outbound_detectors=("known_secrets", "token_patterns"),
                ),
                RouteSpec(PLAIN, ports=(upstream.https_port,), auth_scheme="Bearer", token=token),
            ],
            upstream_ca=str(pki.ca_cert),
            extra_hosts={SCANNED: "127.0.0.1", PLAIN: "127.0.0.1"},
        )
        config.write(tmp / "egress.json")
        egress = start_egress(
            tmp / "egress.json",
            ca.confdir,
            env={**{k: v.reveal() for k, v in env.items()}, "BOT_BOTTLE_HOME": str(tmp / "home")},
        )
        try:
            ctx = ssl.create_default_context(cafile=str(ca.agent_cert))
            with httpx.Client(proxy=egress.proxy_url, verify=ctx, trust_env=False) as c:
                for size in SIZES:
                    raw = llm_body(size)
                    for encoding, body in (("identity", raw), ("gzip", gzip.compress(raw))):
                        headers = {"Content-Type": "application/json"}
                        if encoding == "gzip":
                            headers["Content-Encoding"] = "gzip"
                        port = upstream.https_port
                        plain = median_ms(
                            c, f"https://{PLAIN}:{port}/v1", body, headers, args.requests
                        )
                        scanned = median_ms(
                            c, f"https://{SCANNED}:{port}/v1", body, headers, args.requests
                        )
                        results.append(
                            {
                                "body_kib": round(len(raw) / 1024),
                                "encoding": encoding,
                                "unscanned_p50_ms": round(plain, 2),
                                "scanned_p50_ms": round(scanned, 2),
                                "ratio": round(scanned / plain, 2),
                                "added_ms": round(scanned - plain, 2),
                            }
                        )
        finally:
            egress.stop()
            upstream.stop()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'body':>8} {'enc':>8} {'off p50':>9} {'DLP p50':>9} {'ratio':>6} {'added':>8}")
        for r in results:
            print(
                f"{r['body_kib']:>6}Ki {r['encoding']:>8} {r['unscanned_p50_ms']:>7.2f}ms "
                f"{r['scanned_p50_ms']:>7.2f}ms {r['ratio']:>6.2f} {r['added_ms']:>6.2f}ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
