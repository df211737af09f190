"""``bot-bottle start [AGENT]``: preflight, y/N, then an interactive session."""

from __future__ import annotations

import argparse
from typing import Any

from bot_bottle.termtext import visible


def add_parser(sub: Any) -> None:
    from bot_bottle.cli.launch_common import add_backend_args

    p = sub.add_parser("start", help="start an agent in a fresh bottle, interactively")
    p.add_argument("agent", nargs="?", help="agent name (omitted: pick one on a terminal)")
    add_backend_args(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="show the plan; create nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.set_defaults(handler=run)


def _pick_agent() -> str:
    import sys

    from bot_bottle.errors import BotBottleError
    from bot_bottle.manifest.listing import list_agents
    from bot_bottle.manifest.store import Manifest

    rows = [r for r in list_agents(Manifest.discover()) if r.status == "ok"]
    if not rows:
        raise BotBottleError("no usable agent", hint="run 'bot-bottle init' for a demo agent")
    if not sys.stdin.isatty():
        raise BotBottleError(
            "no AGENT given and no terminal to pick one on",
            hint="bot-bottle start AGENT (see 'bot-bottle list agents')",
        )
    for i, r in enumerate(rows, 1):
        sys.stderr.write(f"  {i}) {visible(r.name)}  (bottle {visible(str(r.bottle))})\n")
    answer = input("agent number: ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(rows):
        raise BotBottleError(f"{answer!r} is not one of the numbers shown")
    return rows[int(answer) - 1].name


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.cli.launch_common import plan_for, print_preflight
    from bot_bottle.launcher import execute

    agent = args.agent or _pick_agent()
    launch = plan_for(args, agent, interactive=True)
    plan, backend = launch.plan, launch.backend
    prepared = backend.prepare(plan)
    if args.dry_run:
        if args.json:
            doc = {"plan": plan.summary(), "backend": prepared.describe()}
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print_preflight(plan, prepared, backend)
        return 0
    print_preflight(plan, prepared, backend)
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write("not a terminal: pass --yes to start without confirmation\n")
            return 1
        if input("start? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    # Prepared once: what the preflight showed is what launches.
    report = execute(
        plan,
        backend=backend,
        provider=launch.provider,
        mode="attach",
        options=launch.options,
        prepared=prepared,
    )
    if report.preserved:
        sys.stderr.write(f"state kept for {plan.slug} (exit {report.exit_code})\n")
    return report.exit_code
