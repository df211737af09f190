"""Agent provider images: build time cold and cached, and size, per provider.

* cold: ``ensure_agent_image(..., no_cache=True)``: ``docker build
  --no-cache``, every package fetched again (through the machine's CA bundle,
  as behind a TLS-inspecting proxy);
* cached: ``ensure_agent_image`` when the content tag exists (what every
  launch pays), median of repeated runs; the ratio cold/cached is printed;
* size: the image as the engine reports it, against the base image it is
  built on (the baseline), and the agent CLI's own footprint in the image.

    .venv/bin/python bench/provider_images.py [--skip-cold] [--runs 5] [--only claude] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import AgentProvider
from bot_bottle.plugins import PluginHost
from bot_bottle_docker.images import ensure_agent_image

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE = "bot-bottle/base:trixie"
#: Where each provider's CLI lives in its image (its footprint).
CLI_DIRS = {"claude": "/opt/claude-code", "codex": "/opt/codex"}


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def size_mb(ref: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", ref)) / 1e6


def measure(name: str, provider: AgentProvider, *, cold: bool, runs: int) -> dict[str, Any]:
    spec = provider.image(provider.options_model())
    ca = HOST_CA if HOST_CA.exists() else None
    out: dict[str, Any] = {}
    if cold:
        t0 = time.perf_counter()
        build = kit.agent_image_spec(name, spec, base_image=BASE_IMAGE, extra_ca=ca)
        result = ensure_agent_image(build, no_cache=True)
        out["cold_build_s"] = round(time.perf_counter() - t0, 1)
    else:
        result = ensure_agent_image(
            kit.agent_image_spec(name, spec, base_image=BASE_IMAGE, extra_ca=ca)
        )
    cached = []
    for _ in range(runs):
        t0 = time.perf_counter()
        again = ensure_agent_image(
            kit.agent_image_spec(name, spec, base_image=BASE_IMAGE, extra_ca=ca)
        )
        cached.append(time.perf_counter() - t0)
        assert not again.built and again.tag == result.tag
    out["cached_ms"] = round(statistics.median(cached) * 1000)
    if "cold_build_s" in out:
        out["cold_over_cached"] = round(out["cold_build_s"] * 1000 / out["cached_ms"])
    image, base = size_mb(result.tag), size_mb(BASE_IMAGE)
    out["image_mb"] = round(image)
    out["base_mb"] = round(base)
    out["image_over_base"] = round(image / base, 1)
    if name in CLI_DIRS:
        du = docker("run", "--rm", "--network", "none", "--entrypoint", "du", result.tag,
                    "-sm", CLI_DIRS[name])  # fmt: skip
        out["cli_mb"] = int(du.split()[0])
    out["tag"] = result.tag
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", action="append", help="provider name (repeatable)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    host = PluginHost().load()
    names = args.only or ["claude", "codex"]
    results = {
        name: measure(
            name, host.create("agent_providers", name), cold=not args.skip_cold, runs=args.runs
        )
        for name in names
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figures in results.items():
            print(name)
            for key, value in figures.items():
                print(f"  {key:>17}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
