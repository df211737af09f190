"""``bot-bottle cleanup``: remove what killed runs left behind, on every backend."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup", help="remove orphaned containers, networks and state dirs (one prompt)"
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.contracts.backend import CleanupItem
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import all_states

    host = PluginHost().load()
    found: list[tuple[Any, list[CleanupItem]]] = []
    skipped: set[str] = set()
    for comp in host.components("backends"):
        backend = host.create("backends", comp.name)
        if not backend.is_available().ok:
            sys.stderr.write(f"skipping backend {comp.name}: not available\n")
            skipped.add(comp.name)
            continue
        items = backend.find_orphans()
        if items:
            found.append((backend, items))
    states = [s for s in all_states() if not s.preserved and not s.owner_alive]
    # A state dir is the only record of its bottle once its backend's
    # resources are gone: kept while that backend cannot be looked at.
    kept = [s for s in states if s.metadata().get("backend") in skipped]
    states = [s for s in states if s not in kept]
    for s in kept:
        sys.stderr.write(f"keeping {s.path}: its backend is not available\n")
    total = sum(len(items) for _, items in found) + len(states)
    if not total:
        print("nothing to clean up")
        return 1 if kept else 0
    for _, items in found:
        for item in items:
            print(f"{item.backend:8} {item.kind:10} {item.name}")
    for s in states:
        print(f"{'-':8} {'state dir':10} {s.path}")
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write("not a terminal: pass --yes to remove these\n")
            return 1
        if input(f"remove these {total}? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    removed = 0
    for backend, items in found:
        removed += len(backend.cleanup(items))
    for s in states:
        s.remove()
        removed += 1
    print(f"removed {removed} of {total}")
    return 0 if removed == total and not kept else 1
