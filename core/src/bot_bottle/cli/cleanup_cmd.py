"""``bot-bottle cleanup``: remove what killed runs left behind, on every backend.

Deploy keys first: every key a gone bottle's state dir still records (a
SIGKILLed launcher, a revocation the forge refused) is listed, then revoked
through its provisioner. A state dir whose keys are not all revoked is kept,
so the next ``cleanup`` retries them.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cleanup",
        help="revoke orphaned deploy keys; remove orphaned containers, networks, state dirs "
        "and snapshot images no snapshot names (one prompt)",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument(
        "--preserved",
        action="store_true",
        help="also remove bottles kept after a non-zero exit (their state dir and stopped "
        "agent); 'bot-bottle commit SLUG' first keeps their work as a snapshot",
    )
    p.add_argument(
        "--history-days",
        type=int,
        metavar="DAYS",
        help="remove kept logs and proposals of bottles that ended more than DAYS ago "
        "(default: $BOT_BOTTLE_HISTORY_DAYS, else 30)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle import audit
    from bot_bottle.contracts.backend import DEFAULT_BACKEND, CleanupItem
    from bot_bottle.errors import BotBottleError
    from bot_bottle.gitgate.ledger import KeyLedger, revoke_recorded
    from bot_bottle.history import all_histories, expired, retention_days
    from bot_bottle.plugins import PluginHost
    from bot_bottle.state import all_states
    from bot_bottle.termtext import visible

    host = PluginHost().load()
    found: list[tuple[Any, list[CleanupItem]]] = []
    skipped: set[str] = set()
    used = {s.metadata().get("backend", DEFAULT_BACKEND) for s in all_states()}
    for comp in host.components("backends"):
        backend = host.create("backends", comp.name)
        if not backend.is_available().ok:
            # A backend for another platform (apple_container on Linux) is
            # worth no word; the default one, or one a bottle here used, is:
            # its orphans cannot be looked for.
            if comp.name == DEFAULT_BACKEND or comp.name in used:
                sys.stderr.write(f"skipping backend {comp.name}: not available\n")
            skipped.add(comp.name)
            continue
        items = backend.find_orphans()
        if items:
            found.append((backend, items))
    gone = [s for s in all_states() if not s.owner_alive]
    keys = [(KeyLedger(s.path), e) for s in gone for e in KeyLedger(s.path).entries()]
    states = [s for s in gone if not s.preserved]
    # A state dir is the only record of its bottle once its backend's
    # resources are gone: kept while that backend cannot be looked at.
    kept = [s for s in states if s.metadata().get("backend") in skipped]
    states = [s for s in states if s not in kept]
    for s in kept:
        sys.stderr.write(f"keeping {s.path}: its backend is not available\n")
    preserved = [s for s in all_states() if s.preserved] if args.preserved else []
    dangling = _dangling_snapshot_images(host)
    days = retention_days(args.history_days)
    old = expired(all_histories(), days)
    total = (
        sum(len(items) for _, items in found)
        + len(states)
        + len(keys)
        + len(dangling)
        + len(preserved)
        + len(old)
    )
    if not total:
        print("nothing to clean up")
        return 1 if kept else 0
    for _, items in found:
        for item in items:
            print(f"{item.backend:8} {item.kind:10} {item.name}")
    for _, entry in keys:
        note = f" (last failure: {entry.record.error})" if entry.record.error else ""
        print(f"{'-':8} {'deploy key':10} {visible(entry.record.describe() + note)}")
    for s in states:
        print(f"{'-':8} {'state dir':10} {s.path}")
    for freezer, image in dangling:
        print(f"{freezer.name:8} {'snapshot image (no snapshot names it)':10} {image.ref}")
    for s in preserved:
        print(f"{s.metadata().get('backend', '-')!s:8} {'preserved bottle':10} {s.slug}")
    for h in old:
        print(f"{'-':8} {'history':10} {h.path} (ended over {days} days ago)")
    if not args.yes:
        if not sys.stdin.isatty():
            sys.stderr.write("not a terminal: pass --yes to remove these\n")
            return 1
        if input(f"remove these {total}? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    removed = 0
    for ledger, entry in keys:
        rec = entry.record
        # An operator decision about a credential: recorded before it acts.
        audit.record(
            "deploykey.revoke",
            bottle=rec.bottle_slug,
            provisioner=rec.provisioner,
            repo=rec.repo_name,
            key_id=rec.key_id,
        )
        reason = revoke_recorded(host, ledger, entry)
        if reason is None:
            removed += 1
        else:
            sys.stderr.write(
                f"error: could not revoke {visible(entry.record.describe())}: {visible(reason)}\n"
                "hint: fix the cause and run 'bot-bottle cleanup' again, or delete the key on "
                "the forge by hand\n"
            )
    for backend, items in found:
        removed += len(backend.cleanup(items))
    for s in states:
        if KeyLedger(s.path).entries():
            continue  # kept so the next cleanup retries its keys
        if s.pending:
            # A backend could not finish this bottle (e.g. give a --cwd tree
            # back): its record stays for the next cleanup.
            sys.stderr.write(f"keeping {s.path}: {visible(s.pending)}\n")
            continue
        s.remove()
        removed += 1
    for freezer, image in dangling:
        freezer.remove(image)
        removed += 1
    for s in preserved:
        try:
            remove_preserved(host, s)
        except BotBottleError as exc:
            sys.stderr.write(f"cannot remove the kept agent of {s.slug}: {exc}\n")
            continue
        removed += 1
    for h in old:
        h.remove()
        removed += 1
    print(f"removed {removed} of {total}")
    return 0 if removed == total and not kept else 1


def _dangling_snapshot_images(host: Any) -> list[tuple[Any, Any]]:
    """Frozen images of this home that no snapshot record names and no bottle
    uses (a record removed by hand, a commit killed before its record was
    written). What ``snapshots`` lists is never among them."""
    import sys

    from bot_bottle.contracts.freezer import FrozenImage
    from bot_bottle.snapshots import all_records

    named = {r.image for r in all_records()}
    out: list[tuple[Any, Any]] = []
    for comp in host.components("freezers"):
        try:
            freezer = host.create("freezers", comp.name)
            backend = host.create("backends", comp.name)
            if not backend.is_available().ok:
                continue
            refs = freezer.frozen_refs()
        except Exception as exc:
            sys.stderr.write(f"skipping snapshot images of {comp.name}: {exc}\n")
            continue
        for ref in refs:
            image = FrozenImage(backend=comp.name, ref=ref, created_at="")
            if ref not in named and not freezer.in_use(image):
                out.append((freezer, image))
    return out


def remove_preserved(host: Any, state: Any) -> None:
    """A bottle kept after a non-zero exit: its stopped agent, then its state dir."""
    from bot_bottle.contracts.backend import DEFAULT_BACKEND

    backend = str(state.metadata().get("backend") or DEFAULT_BACKEND)
    host.create("freezers", backend).release(state.slug)
    state.remove()
