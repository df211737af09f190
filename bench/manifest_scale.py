"""Manifest scale: ``list agents`` over many agent files, ``info`` on one of them.

Builds a temporary ``BOT_BOTTLE_HOME`` with N agent files (spread over a few
bottles with an ``extends:`` chain) and a drop-in plugin providing the
``claude`` template, then measures, in the same run:

* ``bot-bottle list agents`` and ``bot-bottle info <one agent>`` as
  subprocesses, against ``python -c pass`` (interpreter start-up baseline);
* in-process: listing names only, listing with full resolution, and
  resolving one agent with a fresh :class:`Manifest` — at N=10 and N=1000,
  so the ratio shows whether resolving one agent grows with the number of
  other files (it should not).

Each case reports median wall time and median CPU time (this process and
its children); ratios use CPU time, which other work on a shared machine
disturbs much less than wall time.

    .venv/bin/python bench/manifest_scale.py [--agents 1000] [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent

PLUGIN = """
from pydantic import BaseModel, ConfigDict
from bot_bottle import Registration, hookimpl

class ClaudeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auth_token: str | None = None

class Claude:
    options_model = ClaudeOptions

@hookimpl
def bot_bottle_register_agent_providers():
    return [Registration("claude", Claude, "bench double")]
"""

BASE = """---
agent_provider: {template: claude}
env: {LOG_LEVEL: info}
egress:
  routes:
    - host: pypi.org
      matches: [{paths: [{type: regex, value: '^/simple/[a-z0-9-]+/$'}], methods: [GET]}]
    - host: files.pythonhosted.org
---
"""


def build_home(root: Path, agents: int) -> Path:
    home = root / f"home-{agents}"
    (home / "bottles").mkdir(parents=True)
    (home / "agents").mkdir()
    (home / "contrib" / "benchclaude").mkdir(parents=True)
    (home / "contrib" / "benchclaude" / "plugin.py").write_text(PLUGIN)
    (home / "bottles" / "base.md").write_text(BASE)
    for i in range(5):
        (home / "bottles" / f"team-{i}.md").write_text(
            f"---\nextends: base\nenv: {{TEAM: '{i}', TOKEN: '${{TEAM_{i}_TOKEN}}'}}\n---\n"
        )
    for i in range(agents):
        (home / "agents" / f"agent-{i:04d}.md").write_text(
            f"---\nbottle: team-{i % 5}\nskills: [s{i % 7}]\n"
            f"git_user: {{name: Agent {i}}}\ndescription: bench agent {i}\n---\n"
            f"You are agent {i}.\n"
        )
    return home


def _cpu() -> float:
    """CPU seconds of this process and its finished children: steadier than
    wall time on a machine shared with other work."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median wall time, median CPU time) in ms."""
    fn()  # warm caches (page cache, imports, bytecode)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = _cpu(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((_cpu() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def cli(home: Path, *args: str) -> Callable[[], object]:
    env = {**os.environ, "BOT_BOTTLE_HOME": str(home)}
    # Installed packages normally carry bytecode; without it every run pays
    # for compiling pydantic and ruamel.yaml (the warm-up run writes it).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [str(BIN / "bot-bottle"), *args]
    return lambda: subprocess.run(argv, env=env, capture_output=True, check=True, cwd=home)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bot_bottle.manifest import Manifest
    from bot_bottle.manifest.listing import list_agents
    from bot_bottle.plugins import PluginHost

    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        small = build_home(Path(tmp), 10)
        large = build_home(Path(tmp), args.agents)
        n = args.agents
        results["python -c pass"] = timed(
            lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.runs
        )
        results[f"cli list agents ({n})"] = timed(cli(large, "list", "agents"), args.runs)
        results["cli info (10)"] = timed(cli(small, "info", "agent-0003"), args.runs)
        results[f"cli info ({n})"] = timed(cli(large, "info", "agent-0003"), args.runs)

        def host_for(home: Path) -> PluginHost:
            return PluginHost(environ={}, contrib=home / "contrib").load()

        hosts = {10: host_for(small), n: host_for(large)}
        homes = {10: small, n: large}
        for size in (10, n):
            home, host = homes[size], hosts[size]
            results[f"names only ({size})"] = timed(
                lambda home=home, host=host: Manifest(home=home, host=host).agents(), args.runs
            )
            results[f"list resolved ({size})"] = timed(
                lambda home=home, host=host: list_agents(Manifest(home=home, host=host)),
                args.runs,
            )
            results[f"resolve one ({size})"] = timed(
                lambda home=home, host=host: Manifest(home=home, host=host).agent("agent-0003"),
                args.runs * 5,
            )

    base = results["python -c pass"][0]
    # Ratios on CPU time: wall time swings with whatever else the machine runs.
    one_small, one_large = results["resolve one (10)"][1], results[f"resolve one ({n})"][1]
    cli_small, cli_large = results["cli info (10)"][1], results[f"cli info ({n})"][1]
    if args.json:
        json.dump(
            {
                "ms": {k: {"wall": v[0], "cpu": v[1]} for k, v in results.items()},
                "resolve_one_ratio": one_large / one_small,
                "cli_info_ratio": cli_large / cli_small,
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0
    base_cpu = results["python -c pass"][1]
    for name, (wall, cpu) in results.items():
        print(
            f"{name:<28} wall {wall:9.2f} ms  cpu {cpu:9.2f} ms"
            f"  ({wall / base:5.1f}x / {cpu / base_cpu:5.1f}x python -c pass)"
        )
    print(
        f"\nresolve one agent (cpu): {n} files / 10 files = {one_large / one_small:.2f}x; "
        f"cli info: {cli_large / cli_small:.2f}x (1.0 = independent of the number of files)"
    )
    per = results[f"list resolved ({n})"][1] / n
    print(f"list with resolution: {per:.3f} ms CPU per agent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
