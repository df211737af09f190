"""``bot-bottle list agents``: every agent, where it comes from, its bottle, and
whether it is broken (with the reason). One broken file never hides the others."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list agents or active bottles")
    lsub = p.add_subparsers(dest="list_command", metavar="WHAT")
    agents = lsub.add_parser(
        "agents", help="list agents: name, source (home/repo), bottle, broken and why"
    )
    agents.add_argument("--json", action="store_true", help="machine-readable output")
    agents.set_defaults(handler=run)
    active = lsub.add_parser(
        "active",
        help="running bottles: backend, slug, label, agent, started, services, "
        "each sidecar daemon's state and crash count",
    )
    active.add_argument("--json", action="store_true", help="machine-readable output")
    active.set_defaults(handler=run_active)
    p.set_defaults(handler=run, json=False)


def run_active(args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import asdict

    from bot_bottle.plugins import PluginHost

    host = PluginHost().load()
    rows = []
    # A backend that does not answer (an engine down or restarting) may still
    # run bottles: "no active bottles" would be a claim nobody checked.
    unknown: list[str] = []
    for comp in host.components("backends"):
        backend = host.create("backends", comp.name)
        availability = backend.is_available()
        if availability.ok:
            rows.extend(backend.list_active())
        elif _has_state(comp.name):
            unknown.append(comp.name)
            sys.stderr.write(f"warning: cannot list the bottles of backend {comp.name}: "
                             f"{availability.detail}\n")  # fmt: skip
    code = 1 if unknown else 0
    if args.json:
        json.dump({"active": [asdict(r) for r in rows], "unavailable": unknown}, sys.stdout,
                  indent=2)  # fmt: skip
        sys.stdout.write("\n")
        return code
    if not rows:
        print("no active bottles" + (" that could be asked" if unknown else ""))
        return code
    from bot_bottle.termtext import visible

    table: list[tuple[str, ...]] = [
        ("BACKEND", "SLUG", "LABEL", "AGENT", "STARTED", "SERVICES", "SIDECARS")
    ]
    for r in rows:
        cells = (r.backend, r.slug, r.label or "-", r.agent, r.started_at, ",".join(r.services),
                 _sidecars(r.daemons))  # fmt: skip
        table.append(tuple(visible(c) for c in cells))
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return code


def _has_state(backend: str) -> bool:
    """Whether a state dir of this home names ``backend`` (a bottle started
    here that no cleanup has ended): only then is its silence worth a word."""
    from bot_bottle.contracts.backend import DEFAULT_BACKEND
    from bot_bottle.state import all_states

    # Metadata older than the backend field was written by the default backend.
    return any(s.metadata().get("backend", DEFAULT_BACKEND) == backend for s in all_states())


def _sidecars(daemons: Any) -> str:
    """``egress ok, git-gate restarting (2 crashes)``; ``-`` when unknown."""
    parts = []
    for d in daemons:
        # idle: started on its first connection (bot_bottle_sidecars.init on_demand).
        text = "ok" if d.state == "running" else "ok (idle)" if d.state == "idle" else d.state
        if d.crashes:
            text += f" ({d.crashes} crash{'es' if d.crashes != 1 else ''}"
            text += f", last {d.last_exit})" if d.last_exit else ")"
        parts.append(f"{d.name} {text}")
    return ", ".join(parts) or "-"


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.manifest.listing import list_agents
    from bot_bottle.manifest.store import Manifest

    manifest = Manifest.discover()
    rows = list_agents(manifest)
    warnings = manifest.warnings()
    if args.json:
        json.dump(
            {"agents": [r.to_json() for r in rows], "warnings": warnings},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 0
    from bot_bottle.termtext import visible

    # Agent and bottle names are file names from a repository: escaped.
    for warning in warnings:
        sys.stderr.write(f"warning: {visible(warning)}\n")
    if not rows:
        where = visible(str(manifest.agents_dir))
        print(f"no agents in {where} (run 'bot-bottle init' for examples)")
        return 0
    table: list[tuple[str, ...]] = [("NAME", "SOURCE", "BOTTLE", "STATUS")]
    for r in rows:
        table.append(tuple(visible(c) for c in (r.name, r.source, r.bottle or "-", r.status)))
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    broken = [r for r in rows if r.reason]
    if broken:
        print()
        for r in broken:
            print(f"{visible(r.name)} ({visible(r.source)}): {visible(r.reason or '')}")
    return 0
