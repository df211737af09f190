"""``bot-bottle schema [bottle|agent]``: JSON Schema for editor completion,
including the options of the installed plugins."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "schema", help="print the JSON Schema of bottle and agent frontmatter (for editors)"
    )
    p.add_argument(
        "kind",
        nargs="?",
        choices=("bottle", "agent"),
        help="print only this kind's schema (default: both, keyed by kind)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.manifest.schema import agent_schema, bottle_schema
    from bot_bottle.plugins import PluginHost

    if args.kind == "agent":
        out: dict[str, Any] = agent_schema()
    else:
        bottle = bottle_schema(PluginHost().load())
        out = bottle if args.kind == "bottle" else {"bottle": bottle, "agent": agent_schema()}
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
