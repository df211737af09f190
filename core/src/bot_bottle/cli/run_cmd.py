"""``bot-bottle run AGENT -- CMD...``: headless. No prompts; the exit code is CMD's;
the bottle is torn down afterwards."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    from bot_bottle.cli.launch_common import add_backend_args

    p = sub.add_parser("run", help="run a command in a fresh bottle, headless; exit with its code")
    p.add_argument("agent", help="agent name")
    add_backend_args(p)
    p.add_argument("--timings", action="store_true", help="print phase timings to stderr")
    p.add_argument("cmd", nargs="*", help="-- CMD [ARG...] (default: the agent, headless)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.cli.launch_common import plan_for
    from bot_bottle.launcher import execute

    cmd = list(args.cmd)
    plan, backend, provider, options = plan_for(args, args.agent, interactive=False)
    report = execute(
        plan, backend=backend, provider=provider, mode="run", argv=cmd, options=options
    )
    if args.timings:
        parts = " ".join(f"{k}={v:.2f}s" for k, v in report.timings.items())
        sys.stderr.write(f"timings: {parts}\n")
    if report.preserved:
        sys.stderr.write(f"state kept for {plan.slug} (exit {report.exit_code})\n")
    return report.exit_code
