"""CLI start-up time: ``bot-bottle --help`` and ``plugins list`` vs ``python -c pass``.

Median wall time of repeated runs, measured in the same run as the
interpreter baseline so machines of different speed compare by ratio.
Targets (the CLI is typed interactively, many times a day): --help <= 250 ms,
plugins list <= 400 ms.

    .venv/bin/python bench/cli_startup.py [--runs 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def measure(argv: list[str], runs: int) -> dict[str, float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[int(len(times) * 0.9) - 1],
        "min_ms": times[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "bot-bottle --help": [str(BIN / "bot-bottle"), "--help"],
        "bot-bottle plugins list": [str(BIN / "bot-bottle"), "plugins", "list"],
    }
    results = {name: measure(argv, args.runs) for name, argv in cases.items()}
    base = results["python -c pass"]["median_ms"]
    for r in results.values():
        r["ratio_to_python"] = r["median_ms"] / base
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        for name, r in results.items():
            print(
                f"{name:<26} median {r['median_ms']:7.1f} ms  p90 {r['p90_ms']:7.1f} ms"
                f"  ({r['ratio_to_python']:.1f}x python -c pass)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
