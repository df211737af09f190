"""``bot-bottle info <agent>``: the effective bottle, as a launch would use it.

Shows env *names* and where each value will come from, never a value; the
git identity with per-field provenance; egress routes; git-gate repos.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="show an agent's effective bottle (no secret values)")
    p.add_argument("agent", help="agent name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.manifest.info import describe, render
    from bot_bottle.manifest.store import Manifest
    from bot_bottle.termtext import visible

    manifest = Manifest.discover()
    for warning in manifest.warnings(args.agent):
        sys.stderr.write(f"warning: {visible(warning)}\n")
    agent = manifest.agent(args.agent)
    info = describe(agent)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        # Manifest values (names, hosts, paths, git identity) are the repo's.
        sys.stdout.write(visible(render(info), allow_newlines=True))
    return 0
