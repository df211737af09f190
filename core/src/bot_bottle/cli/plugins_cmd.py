"""``bot-bottle plugins list``: what is installed, what it provides, what is broken."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plugins", help="show installed plugins")
    psub = p.add_subparsers(dest="plugins_command", metavar="SUBCOMMAND")
    lst = psub.add_parser(
        "list",
        help="list plugins, their hooks and components, and broken ones with the reason",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(handler=run_list)
    p.set_defaults(handler=run_list, json=False)


def run_list(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.plugins import PluginHost, Status

    host = PluginHost().load()
    host.collect_all()
    infos = sorted(host.infos.values(), key=lambda i: (i.name, i.distribution or ""))
    if args.json:
        json.dump({"plugins": [i.to_json() for i in infos]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not infos:
        print("no plugins installed (see README: 'Writing a plugin')")
        return 0
    rows = [("NAME", "VERSION", "SOURCE", "STATUS", "PROVIDES")]
    for i in infos:
        provides = "; ".join(
            f"{family.replace('_', ' ')}: {', '.join(names)}"
            for family, names in sorted(i.components.items())
        )
        if not provides and i.hooks:
            provides = ", ".join(i.hooks)
        version = f"{i.distribution} {i.version}" if i.distribution else "-"
        rows.append((i.name, version, i.source.value, i.status.value, provides or "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1])
    print(_accelerator_line(host))
    broken = [i for i in infos if i.status is Status.FAILED]
    if broken:
        print()
        print(f"{len(broken)} broken plugin(s):")
        for i in broken:
            print(f"  {i.name}: {i.error}")
    return 0


def _accelerator_line(host: Any) -> str:
    """Whether the DLP views' runs are found natively: one line."""
    for comp in host.components("dlp_accelerators"):
        try:
            avail = comp.create().is_available()
        except Exception as exc:
            return f"dlp accelerator {comp.name}: cannot be used: {exc}"
        if avail.ok:
            return f"dlp accelerator {comp.name}: {avail.detail or 'in use'}"
        return f"dlp accelerator {comp.name}: {avail.detail}"
    return "dlp accelerator: none installed: the DLP views find their runs in Python"
