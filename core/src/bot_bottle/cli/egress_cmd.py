"""``bot-bottle egress``: a running bottle's routes, changed live (SIGHUP
reload, no restart). Each change is audited, validated with the manifest's
route model, and confirmed against the daemon's live table."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("egress", help="show or change a running bottle's egress routes")
    esub = p.add_subparsers(dest="egress_command", metavar="ACTION")
    routes = esub.add_parser("routes", help="the live route table and recent refusals")
    routes.add_argument("slug")
    routes.add_argument("--json", action="store_true", help="machine-readable output")
    routes.set_defaults(handler=run_routes)
    allow = esub.add_parser("allow", help="let the bottle reach HOST now")
    allow.add_argument("slug")
    allow.add_argument("host")
    allow.add_argument("--port", type=int, action="append", default=[], help="repeatable")
    allow.add_argument(
        "--path", action="append", default=[], help="path prefix (repeatable; default any)"
    )
    allow.add_argument("--method", action="append", default=[], help="repeatable; default any")
    allow.add_argument("--comment", default=None, help="recorded in the audit log")
    allow.set_defaults(handler=run_allow)
    deny = esub.add_parser("deny", help="remove HOST's route now")
    deny.add_argument("slug")
    deny.add_argument("host")
    deny.add_argument("--comment", default=None, help="recorded in the audit log")
    deny.set_defaults(handler=run_deny)


def _control(slug: str) -> Any:
    from bot_bottle.contracts.supervise import SLUG_RE
    from bot_bottle.errors import BotBottleError
    from bot_bottle.supervision.proposals import default_control_for

    if not SLUG_RE.fullmatch(slug):
        raise BotBottleError(f"invalid bottle slug {slug!r}", hint="see 'bot-bottle list active'")
    control = default_control_for()(slug)
    if control is None:
        raise BotBottleError(
            f"no running bottle {slug} on an available backend",
            hint="see 'bot-bottle list active'",
        )
    return control


def route_spec(host: str, ports: list[int], paths: list[str], methods: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    if ports:
        spec["ports"] = ports
    if paths or methods:
        match: dict[str, Any] = {}
        if paths:
            match["paths"] = [{"type": "prefix", "value": p} for p in paths]
        if methods:
            match["methods"] = [m.upper() for m in methods]
        spec["matches"] = [match]
    return spec


def run_routes(args: argparse.Namespace) -> int:
    import json
    import sys
    from datetime import UTC, datetime

    from bot_bottle.errors import BotBottleError
    from bot_bottle.supervision import live_egress
    from bot_bottle.termtext import visible

    control = _control(args.slug)
    live = control.live_routes()
    try:
        refused = live_egress.refusals(control, since=datetime.now(UTC).timestamp() - 3600)
    except BotBottleError:
        refused = []
    if args.json:
        json.dump({"routes": live.get("routes", []), "refusals": refused}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [("HOST", "PORTS", "AUTH", "MATCHES", "SOURCE")]
    for r in live.get("routes", []):
        matches = "; ".join(_match_text(m) for m in r.get("matches", [])) or "any"
        rows.append(
            (visible(str(r.get("host"))), ",".join(str(p) for p in r.get("ports", [])),
             "injected" if r.get("auth") else "-", visible(matches), visible(str(r.get("source"))))
        )  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if refused:
        print(f"\nrefused in the last hour ({len(refused)}):")
        for e in refused[-20:]:
            print(
                f"  {visible(str(e.get('ts', '?')))}  {visible(str(e.get('host', '?')))}"
                f"  {visible(str(e.get('rule', '?')))}  {visible(str(e.get('method', '')))}"
                f" {visible(str(e.get('path', '')))}"
            )
    return 0


def _match_text(m: dict[str, Any]) -> str:
    parts = [",".join(m.get("methods", []))] + [p.get("value", "") for p in m.get("paths", [])]
    return " ".join(x for x in parts if x)


def run_allow(args: argparse.Namespace) -> int:
    from bot_bottle.supervision import live_egress

    control = _control(args.slug)
    spec = route_spec(args.host, args.port, args.path, args.method)
    change = live_egress.allow(control, spec, comment=args.comment)
    verb = "replaced" if change.before else "added"
    print(f"{verb} route {change.host} in bottle {args.slug} (live; no restart)")
    return 0


def run_deny(args: argparse.Namespace) -> int:
    from bot_bottle.supervision import live_egress

    control = _control(args.slug)
    change = live_egress.deny(control, args.host, comment=args.comment)
    print(f"removed route {change.host} from bottle {args.slug} (live; no restart)")
    return 0
