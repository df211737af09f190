"""``bot-bottle snapshots [--json]`` and ``bot-bottle snapshots rm NAME``."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "snapshots",
        help="list snapshots ('snapshots rm NAME' removes one and its image)",
        description=(
            "List the snapshots 'bot-bottle commit' made. 'snapshots rm NAME' removes "
            "a snapshot's record and its image; it refuses while a bottle runs from it."
        ),
    )
    p.add_argument("action", nargs="?", choices=["rm"], help="rm: remove snapshot NAME")
    p.add_argument("name", nargs="?", help="the snapshot to remove")
    p.add_argument("--json", action="store_true", help="the list as JSON")
    p.set_defaults(handler=run)


def _freezers(host: Any) -> dict[str, Any]:
    import sys

    from bot_bottle.errors import BotBottleError

    out: dict[str, Any] = {}
    for comp in host.components("freezers"):
        try:
            out[comp.name] = host.create("freezers", comp.name)
        except BotBottleError as exc:
            sys.stderr.write(f"freezer {comp.name} is not usable: {exc}\n")
    return out


def _list(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.plugins import PluginHost
    from bot_bottle.snapshots import all_records
    from bot_bottle.termtext import visible

    records = all_records()
    freezers = _freezers(PluginHost().load()) if records else {}
    rows: list[dict[str, Any]] = []
    for r in records:
        freezer = freezers.get(r.backend)
        present = freezer.exists(r.frozen()) if freezer is not None else None
        in_use = freezer.in_use(r.frozen()) if freezer is not None and present else []
        rows.append({**r.model_dump(mode="json"), "image_present": present, "in_use": in_use})
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no snapshots (make one with 'bot-bottle commit')")
        return 0
    print(f"{'NAME':24} {'AGENT':16} {'CREATED':26} {'PARENT':16} IMAGE")
    for row in rows:
        status = "" if row["image_present"] else " (image missing)"
        if row["in_use"]:
            status += f" (in use by {', '.join(row['in_use'])})"
        print(
            f"{row['name']:24} {visible(row['agent'], limit=16):16} {row['created_at']:26} "
            f"{row['parent'] or '-':16} {row['image'][:19]}{status}"
        )
    return 0


def _rm(name: str) -> int:
    from bot_bottle import audit
    from bot_bottle.errors import BotBottleError
    from bot_bottle.plugins import PluginHost
    from bot_bottle.snapshots import load_record, remove_record

    record = load_record(name)
    host = PluginHost().load()
    freezer = host.create("freezers", record.backend)
    users = freezer.in_use(record.frozen())
    if users:
        raise BotBottleError(
            f"snapshot {name} is in use by {', '.join(users)}",
            hint="stop those bottles first ('bot-bottle list active')",
        )
    freezer.remove(record.frozen())
    remove_record(name)
    audit.record("snapshot-remove", snapshot=name, image=record.image)
    print(f"removed snapshot {name}")
    return 0


def run(args: argparse.Namespace) -> int:
    from bot_bottle.errors import BotBottleError

    if args.action == "rm":
        if not args.name:
            raise BotBottleError("which snapshot?", hint="bot-bottle snapshots rm NAME")
        return _rm(args.name)
    if args.name:
        raise BotBottleError(
            f"unexpected argument {args.name!r}", hint="bot-bottle snapshots [--json] | rm NAME"
        )
    return _list(args)
