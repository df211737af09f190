"""``bot-bottle proposals``: the agents' proposals across bottles, answered
headless (the console calls the same functions). Every field an agent wrote
is printed through :func:`bot_bottle.termtext.visible`."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("proposals", help="list, show, approve or reject the agents' proposals")
    psub = p.add_subparsers(dest="proposals_command", metavar="ACTION")
    ls = psub.add_parser("list", help="proposals of every bottle, newest first")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument(
        "--all", action="store_true", help="include answered proposals (default: pending only)"
    )
    ls.set_defaults(handler=run_list)
    show = psub.add_parser("show", help="one proposal: who asked, why, the change as a diff")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=run_show)
    ok = psub.add_parser("approve", help="approve a proposal (egress requests apply live)")
    ok.add_argument("id")
    ok.add_argument("--comment", default="", help="a note for the agent")
    ok.add_argument(
        "--dockerfile-file",
        help="approve this Dockerfile text instead (an edited capability-block)",
    )
    ok.set_defaults(handler=run_approve)
    no = psub.add_parser("reject", help="reject a proposal; the comment tells the agent why")
    no.add_argument("id")
    no.add_argument("--comment", required=True, help="why (the agent reads it)")
    no.set_defaults(handler=run_reject)
    p.set_defaults(handler=run_list, json=False, all=False)


def run_list(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.contracts.supervise import ProposalStatus
    from bot_bottle.supervision.proposals import list_proposals
    from bot_bottle.termtext import visible

    views, problems = list_proposals(status=None if args.all else ProposalStatus.PENDING)
    for problem in problems:
        sys.stderr.write(f"warning: {visible(problem)}\n")
    if args.json:
        json.dump({"proposals": [v.as_json() for v in views]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not views:
        print("no pending proposals" if not args.all else "no proposals")
        return 0
    rows = [("ID", "BOTTLE", "AGENT", "KIND", "STATUS", "WHAT")]
    for v in views:
        rows.append(
            (v.id, v.bottle.slug, visible(v.bottle.agent), v.proposal.tool, v.status.value,
             visible(v.summary))
        )  # fmt: skip
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def render_proposal(view: Any, diff_text: str, notice: str) -> str:
    from bot_bottle.contracts.supervise import CapabilityBlockPayload
    from bot_bottle.termtext import visible

    p = view.proposal.payload
    lines = [
        f"proposal   {view.id}",
        f"bottle     {view.bottle.slug} (agent {visible(view.bottle.agent)})",
        f"kind       {view.proposal.tool}",
        f"status     {view.status.value}",
        f"created    {view.proposal.created_at.isoformat()}",
    ]
    if not isinstance(p, CapabilityBlockPayload):
        lines.append(f"host       {visible(p.host)}")
        if p.ports:
            lines.append(f"ports      {', '.join(str(x) for x in p.ports)}")
        if p.paths:
            lines.append(f"paths      {visible(', '.join(p.paths))}")
        if p.methods:
            lines.append(f"methods    {', '.join(p.methods)}")
    lines += ["", "justification:", visible(p.justification, allow_newlines=True), ""]
    lines += ["change:", visible(diff_text, allow_newlines=True) or "(no change)", ""]
    if view.response is not None:
        r = view.response
        lines.append(f"answer     {r.decision.value} at {r.decided_at.isoformat()}")
        if r.comment:
            lines.append(f"comment    {visible(r.comment)}")
    else:
        lines.append(notice)
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    import json
    import sys

    from bot_bottle.supervision.proposals import diff, effect_notice, find_proposal

    view = find_proposal(args.id)
    if args.json:
        json.dump(view.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    control = None
    if view.proposal.tool == "egress-route" and view.bottle.running:
        from bot_bottle.supervision.proposals import default_control_for

        control = default_control_for()(view.bottle.slug)
    print(render_proposal(view, diff(view, control), effect_notice(view)))
    return 0


def run_approve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot_bottle.errors import BotBottleError
    from bot_bottle.supervision.proposals import approve

    dockerfile = None
    if args.dockerfile_file:
        try:
            dockerfile = Path(args.dockerfile_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BotBottleError(
                f"cannot read {args.dockerfile_file}: {exc}", hint="give a readable text file"
            ) from None
    response = approve(args.id, comment=args.comment, dockerfile=dockerfile)
    print(f"approved {response.proposal_id} ({response.bottle_slug}): {response.effect}")
    return 0


def run_reject(args: argparse.Namespace) -> int:
    from bot_bottle.supervision.proposals import reject

    response = reject(args.id, comment=args.comment)
    print(f"rejected {response.proposal_id} ({response.bottle_slug})")
    return 0
