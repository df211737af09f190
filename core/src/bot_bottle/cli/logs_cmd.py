"""``bot-bottle logs SLUG``: a bottle's sidecar logs and proposals, live or afterwards."""

from __future__ import annotations

import argparse
from typing import Any

#: Fields shown on the line itself; the rest follow as key=value.
_HEAD = ("timestamp", "daemon", "level", "event")


def add_parser(sub: Any) -> None:
    from bot_bottle.history import DAEMONS

    p = sub.add_parser(
        "logs",
        help="a bottle's sidecar logs and its proposals with their answers (kept after teardown)",
    )
    p.add_argument("slug", help="the bottle's slug (see 'bot-bottle list active' or its history)")
    p.add_argument(
        "--daemon",
        action="append",
        type=_daemon,
        metavar="|".join(DAEMONS),
        help="only this daemon's records (repeatable); proposals are 'supervise'",
    )
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the bottle ends"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line, as kept")
    p.set_defaults(handler=run)


def _daemon(value: str) -> str:
    from bot_bottle.history import DAEMONS

    name = {"gitgate": "git-gate"}.get(value, value)
    if name not in DAEMONS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(DAEMONS)}")
    return name


def format_record(rec: dict[str, Any]) -> str:
    """One line for a terminal: every value made visible (logs carry what
    agents and upstreams sent)."""
    from bot_bottle.termtext import visible

    ts = str(rec.get("timestamp", ""))[:23]
    head = f"{ts:23} {rec.get('daemon', '?')!s:9} {rec.get('level', '')!s:7} "
    head += str(rec.get("event", ""))
    rest = " ".join(
        f"{k}={v if isinstance(v, str) else _compact(v)}" for k, v in rec.items() if k not in _HEAD
    )
    return visible(head + (f"  {rest}" if rest else ""), limit=4000)


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle import history as hist
    from bot_bottle.errors import BotBottleError

    h = hist.BottleHistory.for_slug(args.slug)
    if not h.exists():
        known = [x.slug for x in hist.all_histories()][-5:]
        raise BotBottleError(
            f"no logs kept for a bottle {args.slug!r}",
            hint=(
                "recent bottles: " + ", ".join(known)
                if known
                else "logs are kept for bottles started since this version; none found"
            ),
        )

    def emit(rec: dict[str, Any]) -> None:
        if args.json:
            sys.stdout.write(json.dumps(rec, ensure_ascii=True) + "\n")
        else:
            sys.stdout.write(format_record(rec) + "\n")

    start = hist.snapshot(h) if args.follow else None
    for rec in hist.records(h, args.daemon, upto=start):
        emit(rec)
    sys.stdout.flush()
    if args.follow:
        for rec in hist.follow(h, args.daemon, start=start):
            emit(rec)
            sys.stdout.flush()
    return 0
