"""``bot-bottle audit``: the operator's decisions, oldest first."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("audit", help="print the audit log of operator decisions")
    p.add_argument("--json", action="store_true", help="one JSON object per line, as stored")
    p.add_argument(
        "--since", help="only records at or after this time (ISO 8601, e.g. 2026-12-04T10:00Z)"
    )
    p.set_defaults(handler=run)


def _since(value: str | None) -> Any:
    from datetime import UTC, datetime

    from bot_bottle.errors import BotBottleError

    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BotBottleError(
            f"--since {value!r} is not an ISO 8601 time", hint="e.g. --since 2026-12-04T10:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    import json

    from bot_bottle import audit
    from bot_bottle.termtext import visible

    since = _since(args.since)
    for entry in audit.read(since=since):
        if args.json:
            print(json.dumps(entry, sort_keys=True))
            continue
        known = ("time", "user", "action", "bottle", "proposal", "route", "comment")
        head = " ".join(
            visible(str(entry.get(k, "-"))) for k in ("time", "user", "action", "bottle")
        )
        extra = [f"{k}={visible(str(entry[k]))}" for k in ("proposal", "route") if k in entry]
        if "comment" in entry:
            extra.append(f"comment={visible(json.dumps(entry['comment']))}")
        rest = {k: v for k, v in entry.items() if k not in known}
        if rest:
            extra.append(visible(json.dumps(rest, sort_keys=True)))
        print(" ".join([head, *extra]))
    return 0
