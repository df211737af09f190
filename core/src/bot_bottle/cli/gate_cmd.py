"""``bot-bottle gate allow SLUG FINDING``: let one refused finding through git-gate."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("gate", help="operator overrides for git-gate")
    gsub = p.add_subparsers(dest="gate_command", metavar="ACTION")
    allow = gsub.add_parser(
        "allow",
        help="let exactly one refused finding (by its id) pass on the next push of the same "
        "content; everything else is still scanned",
    )
    allow.add_argument("slug", help="the running bottle's slug")
    allow.add_argument("finding", help="the finding id from the refusal (gf-...)")
    allow.add_argument("--comment", default="", help="why (kept in the audit log)")
    allow.set_defaults(handler=run_allow)
    p.set_defaults(handler=lambda _a: p.print_help() or 2)


def find_refusal(slug: str, finding: str) -> dict[str, Any] | None:
    """The git-gate log record of ``finding`` in the bottle's kept logs."""
    from bot_bottle.history import BottleHistory, records

    h = BottleHistory.for_slug(slug)
    if not h.exists():
        return None
    for rec in reversed(records(h, ["git-gate"])):
        if rec.get("event") == "push finding" and rec.get("finding_id") == finding:
            return rec
    return None


def run_allow(args: argparse.Namespace) -> int:
    from bot_bottle import audit
    from bot_bottle.errors import BotBottleError
    from bot_bottle.gitgate import allow
    from bot_bottle.state import StateDir
    from bot_bottle.termtext import first_unsafe, visible

    finding = allow.check_finding_id(args.finding.strip())
    state = StateDir.for_slug(args.slug)
    directory = allow.host_dir(args.slug)
    if not state.path.is_dir() or not directory.is_dir():
        raise BotBottleError(
            f"no running bottle {args.slug!r} with a git gate",
            hint="an override applies to a running bottle; see 'bot-bottle list active'",
        )
    if first_unsafe(args.comment, allow_newlines=False) is not None:
        raise BotBottleError(
            "the comment contains control or invisible characters",
            hint="use plain text on one line",
        )
    if finding in allow.allowed_ids(directory / allow.ALLOW_FILE):
        print(f"finding {finding} is already allowed in bottle {args.slug}")
        return 0
    found = find_refusal(args.slug, finding)
    if found is None:
        raise BotBottleError(
            f"bottle {args.slug!r} has refused no push with finding {finding}",
            hint="copy the id from the refusal git-gate printed "
            f"(see 'bot-bottle logs {args.slug} --daemon git-gate')",
        )
    fields = {k: found.get(k) for k in ("repo", "commit", "part", "path", "detector", "rule")}
    # Recorded before it takes effect: an override nobody can account for must not exist.
    # ``path`` is audit.record's own parameter (the log file): the pushed
    # file's path is recorded as ``file``.
    audit.record(
        "gate.allow",
        bottle=args.slug,
        finding=finding,
        comment=args.comment or None,
        **{("file" if k == "path" else k): v for k, v in fields.items()},
    )
    allow.add(
        directory, finding, rule=f"{fields['detector']}/{fields['rule']}", comment=args.comment
    )
    print(
        visible(
            f"allowed finding {finding} ({allow.describe(found)}) in bottle {args.slug}: "
            "the same content passes on the next push; anything else is still scanned"
        )
    )
    return 0
