"""The optional Kingfisher detector against the built-in token rules.

Both run through the same scan pipeline (every decoded view). Measured:

* recall on the fixture corpus: every true-positive fixture of the built-in
  rules (plugins/dlp rules.py) and every evasive form of tests/dlp_evasions.py
  (one token, ~25 ways of hiding it): the share each detector blocks;
* false blocks on the benign corpus (tests/dlp_corpus.py);
* MB/s on a 1 MB chat body, single thread, with sha256 as the baseline.

Kingfisher is not part of the development install; run this with a Python
that has it, e.g.::

    uv venv /tmp/kf
    uv pip install --python /tmp/kf/bin/python core plugins/dlp plugins/kingfisher
    /tmp/kf/bin/python bench/dlp_kingfisher.py [--json]

The built-in fixtures are written for the built-in rules, so recall on them
favours the built-ins; the evasion forms are the same for both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot_bottle.contracts.dlp import Action, Direction, Location
from bot_bottle.dlp import ScanPipeline
from bot_bottle.plugins import PluginHost
from bot_bottle_dlp.rules import RULES
from tests import dlp_corpus, dlp_evasions


def _blocks(pipeline: ScanPipeline, body: bytes) -> bool:
    return any(f.action is Action.BLOCK for f in pipeline.scan_bytes(body, Location("body")))


def _rate(fn: object, body: bytes, repeat: int = 5) -> float:
    assert callable(fn)
    fn(body)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(body)
    return len(body) * repeat / (time.perf_counter() - t0) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    host = PluginHost(environ={}).load()
    t0 = time.perf_counter()
    pipelines = {
        "token_patterns": ScanPipeline.from_host(host, Direction.OUTBOUND, ["token_patterns"]),
        "kingfisher": ScanPipeline.from_host(host, Direction.OUTBOUND, ["kingfisher"]),
    }
    build_s = time.perf_counter() - t0
    fixtures = [tp.encode() for r in RULES for tp in r.tp]
    forms = list(dlp_evasions.token_forms().values()) + list(dlp_evasions.key_forms().values())
    benign = dlp_corpus.benign_outbound()
    body = dlp_corpus.chat_request("Review this code:\n" + dlp_corpus.source_code(1_000_000))[
        :1_000_000
    ]
    results: dict[str, dict[str, float]] = {}
    for name, p in pipelines.items():
        results[name] = {
            "fixture_recall": sum(_blocks(p, f) for f in fixtures) / len(fixtures),
            "evasion_recall": sum(_blocks(p, f) for f in forms) / len(forms),
            "benign_false_blocks": sum(_blocks(p, b) for b in benign.values()),
            "mb_s_1mb": _rate(lambda b, p=p: p.scan_bytes(b, Location("body")), body),
        }
    results["baseline sha256"] = {"mb_s_1mb": _rate(lambda b: hashlib.sha256(b).digest(), body)}
    summary = {
        "fixtures": len(fixtures),
        "evasion_forms": len(forms),
        "benign_bodies": len(benign),
        "detector_build_s": build_s,
        "results": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{len(fixtures)} rule fixtures, {len(forms)} evasive forms, {len(benign)} benign bodies; "
        f"detectors built in {build_s:.1f} s"
    )
    for name, r in results.items():
        bits = [f"{k}={v:.3g}" for k, v in r.items()]
        print(f"  {name:16s} " + "  ".join(bits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
