"""Init's log routing: lines per second through the LogSink (JSON parse, add
``daemon``, re-serialise, append, rotate) vs appending the same bytes to a
file unchanged, in the same run (a ratio, so machines compare).

The lines are egress ``log: full`` records (about 300 bytes each), the
chattiest thing a bundle writes.

    .venv/bin/python bench/init_logs.py [--lines 200000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bot_bottle_sidecars.init.logsink import LogSink


def sample(i: int) -> bytes:
    rec = {"timestamp": "2026-12-04T10:28:03.617Z", "level": "info", "event": "response",
           "host": "api.example.test", "method": "POST", "path": f"/v1/messages/{i}",
           "status": 200, "ms": 12.5, "bytes_in": 18234, "bytes_out": 2211,
           "route": "api.example.test", "auth": "Bearer", "dlp": "clean"}  # fmt: skip
    return json.dumps(rec).encode() + b"\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chunk = b"".join(sample(i) for i in range(1000))
    rounds = max(1, args.lines // 1000)
    total = len(chunk) * rounds
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        fd = os.open(base / "plain.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for _ in range(rounds):
            os.write(fd, chunk)
        os.close(fd)
        plain = time.perf_counter() - t0
        (base / "logs").mkdir()
        sink = LogSink(base / "logs")  # the default 2 MiB x 5 rotation
        t0 = time.perf_counter()
        for _ in range(rounds):
            # A pipe read hands over up to 64 KiB at a time.
            for off in range(0, len(chunk), 65536):
                sink.feed(3, "egress", chunk[off : off + 65536])
        sink.close()
        routed = time.perf_counter() - t0
        kept = sum(p.stat().st_size for p in (base / "logs").iterdir())
    lines = rounds * 1000
    result = {
        "lines": lines,
        "plain_lines_per_s": round(lines / plain),
        "sink_lines_per_s": round(lines / routed),
        "sink_mb_per_s": round(total / routed / 1e6, 1),
        "ratio_plain_over_sink": round(routed / plain, 1),
        "kept_bytes": kept,
        "kept_cap_bytes": 5 * 2 * 1024 * 1024,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
