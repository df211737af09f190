"""Added latency of the egress proxy per request (keep-alive) and small-request RPS.

Same-run comparison against a direct connection to the same local HTTPS
upstream: one keep-alive client each, sequential small GETs, then
``--clients`` keep-alive clients at once. Targets (issue #21: an agent makes
many small API calls, each must stay quick): added p50 <= 1.5 ms, added p99
<= 8 ms, small-request throughput >= 0.4x direct. Also printed: the egress
process's CPU time per request (from /proc; less sensitive to the machine's
load than wall time) and the load average before and after.

    .venv/bin/python bench/egress_latency.py [--requests 2000] [--clients 4] [--json]

``--compare TREE`` starts a second daemon from another source tree of
bot-bottle (say main's, from ``git archive main | tar -x -C TREE``) through
``PYTHONPATH`` against the same upstream, and runs direct, this tree's daemon
and that one interleaved in ``--batches`` batches of ``--requests`` (one
keep-alive client each, the order reversed every other batch) so that the
machine's load drifts hit all three alike; it prints each daemon's mean and
p50, the throughput ratio to direct and the median CPU per request.

``--in-image IMAGE`` (with ``--compare``) runs the second daemon from *this*
tree instead, but with the sidecar bundle image's interpreter (Debian's
python3, built with PGO and LTO; the host's pyenv build has neither), in a
container on the host's network: the interpreter a bottle's egress really
runs on, against the one the other figures use.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
from _egress_common import HOST, Setup, egress_setup
from bot_bottle_testkit.egress import EgressProcess, free_port, start_egress


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


def tree_path(root: Path) -> str:
    """PYTHONPATH running the packages of the source tree ``root``."""
    dirs = [root / "core" / "src", *sorted((root / "plugins").glob("*/src"))]
    dirs += [root / "sidecars" / "src", root / "testkit" / "src"]
    return os.pathsep.join(str(d) for d in dirs if d.is_dir())


def start_in_image(s: Setup, image: str) -> tuple[EgressProcess, int]:
    """This tree's daemon run by ``image``'s interpreter (host network), and
    the host pid of that interpreter (for its CPU time)."""
    tmp = s.egress.config_path.parent
    here = Path(__file__).resolve().parent.parent
    port = free_port()
    name = f"bb-bench-egress-{os.getpid()}"
    env = {**s.env, "PYTHONPATH": tree_path(here), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["docker", "run", "--rm", "--name", name, "--network", "host",
            "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{tmp}:{tmp}",
            "-v", f"{here}:{here}:ro", "--entrypoint", "/opt/bot-bottle/bin/python"]  # fmt: skip
    for key in env:
        argv += ["-e", key]
    argv += [image, "-m", "bot_bottle_sidecars.egress", "--config", str(s.egress.config_path),
             "--confdir", str(s.ca.confdir), "--listen-host", "127.0.0.1",
             "--listen-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    ep = EgressProcess(proc, port, s.egress.config_path)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            ep.lines.append(line.rstrip("\n"))

    ep._reader = threading.Thread(target=pump, daemon=True)  # pyright: ignore[reportPrivateUsage]
    ep._reader.start()  # pyright: ignore[reportPrivateUsage]
    ep.wait_for("egress started", timeout=60)
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", name],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return ep, int(pid)


def compare(
    s: Setup, tree: Path | None, batches: int, n: int, image: str | None = None
) -> dict[str, dict[str, float]]:
    """Direct, this tree's daemon and ``tree``'s (or this tree's in
    ``image``'s interpreter), interleaved batch by batch."""
    if image is not None:
        other, other_pid = start_in_image(s, image)
    else:
        assert tree is not None
        other = start_egress(
            s.egress.config_path, s.ca.confdir, env={**s.env, "PYTHONPATH": tree_path(tree)}
        )
        other_pid = other.proc.pid
    proxied_ctx = ssl.create_default_context(cafile=str(s.ca.agent_cert))
    direct_ctx = ssl.create_default_context(cafile=str(s.pki.ca_cert))
    direct_ctx.check_hostname = False
    path = "/v1/small"
    pids = {"this": s.egress.proc.pid, "compare": other_pid}
    legs = {
        "direct": (
            httpx.Client(verify=direct_ctx, trust_env=False),
            f"https://127.0.0.1:{s.upstream.https_port}{path}",
            {"Host": HOST},
        ),
        "this": (
            httpx.Client(proxy=s.egress.proxy_url, verify=proxied_ctx, trust_env=False),
            s.url + path,
            {},
        ),
        "compare": (
            httpx.Client(proxy=other.proxy_url, verify=proxied_ctx, trust_env=False),
            s.url + path,
            {},
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in legs}
    cpu: dict[str, list[float]] = {k: [] for k in pids}
    try:
        for client, url, headers in legs.values():
            for _ in range(50):
                client.get(url, headers=headers).raise_for_status()
        for b in range(batches):
            for leg in list(legs) if b % 2 == 0 else list(reversed(legs)):
                client, url, headers = legs[leg]
                cpu0 = cpu_seconds(pids[leg]) if leg in pids else 0.0
                for _ in range(n):
                    t0 = time.perf_counter()
                    client.get(url, headers=headers).raise_for_status()
                    times[leg].append((time.perf_counter() - t0) * 1000)
                if leg in pids:
                    cpu[leg].append((cpu_seconds(pids[leg]) - cpu0) * 1000 / n)
    finally:
        for client, _, _ in legs.values():
            client.close()
        if image is not None:
            subprocess.run(["docker", "rm", "-f", f"bb-bench-egress-{os.getpid()}"],
                           capture_output=True, check=False)  # fmt: skip
        other.stop()
    direct_mean = statistics.mean(times["direct"])
    out = {"direct": {"mean_ms": direct_mean, "p50_ms": statistics.median(times["direct"])}}
    for leg in pids:
        out[leg] = {
            "mean_ms": statistics.mean(times[leg]),
            "p50_ms": statistics.median(times[leg]),
            "rps_ratio": direct_mean / statistics.mean(times[leg]),
            "egress_cpu_ms_per_request": statistics.median(cpu[leg]),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compare", type=Path, help="another source tree, interleaved")
    parser.add_argument("--batches", type=int, default=10, help="with --compare")
    parser.add_argument(
        "--in-image", metavar="IMAGE", help="compare with this tree run by IMAGE's python"
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    if args.compare or args.in_image:
        with egress_setup() as s:
            res = compare(s, args.compare, args.batches, args.requests, args.in_image)
        load = (load_before, os.getloadavg()[0])
        if args.json:
            print(json.dumps({**res, "load_before": load[0], "load_after": load[1]}, indent=2))
            return 0
        print(f"load average (1 min): {load[0]:.1f} before, {load[1]:.1f} after")
        print(f"{args.batches} batches of {args.requests} requests each, interleaved")
        d = res["direct"]
        print(f"direct: mean {d['mean_ms']:.3f} ms  p50 {d['p50_ms']:.3f} ms")
        other = f"this tree in {args.in_image}" if args.in_image else str(args.compare)
        for leg, name in (("this", "this tree"), ("compare", other)):
            r = res[leg]
            print(
                f"{name}: mean {r['mean_ms']:.3f} ms  p50 {r['p50_ms']:.3f} ms  "
                f"ratio {r['rps_ratio']:.3f}x (target >= 0.4x)  "
                f"egress CPU per request {r['egress_cpu_ms_per_request']:.3f} ms"
            )
        return 0
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
