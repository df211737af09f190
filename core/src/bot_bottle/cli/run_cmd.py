"""``bot-bottle run AGENT -p PROMPT`` / ``bot-bottle run AGENT -- CMD...``: headless.

No questions asked; the exit code is the agent's (or CMD's); the bottle is torn
down afterwards.
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def add_parser(sub: Any) -> None:
    from bot_bottle.cli.launch_common import add_backend_args

    p = sub.add_parser(
        "run",
        help="run the agent headless on a prompt (or a command) in a fresh bottle",
        description=(
            "Run AGENT headless in a fresh bottle: with -p/--prompt-file, the agent's own "
            "headless mode on that prompt (e.g. 'claude -p'); with -- CMD, that command "
            "as the agent user. Exits with the agent's exit code."
        ),
    )
    p.add_argument("agent", help="agent name")
    add_backend_args(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("-p", "--prompt", help="the task for the agent, run headless")
    what.add_argument(
        "--prompt-file", metavar="FILE", help="read the prompt from FILE ('-': standard input)"
    )
    p.add_argument("--timings", action="store_true", help="print phase timings to stderr")
    p.add_argument("cmd", nargs="*", help="-- CMD [ARG...]: run CMD instead of the agent")
    p.set_defaults(handler=run)


def _prompt(args: argparse.Namespace) -> str | None:
    import sys
    from pathlib import Path

    from bot_bottle.errors import BotBottleError

    has_prompt = args.prompt is not None or args.prompt_file is not None
    if args.cmd and has_prompt:
        raise BotBottleError(
            "give either a prompt or a command, not both",
            hint="bot-bottle run AGENT -p 'PROMPT'  or  bot-bottle run AGENT -- CMD [ARG...]",
        )
    if not args.cmd and not has_prompt:
        raise BotBottleError(
            "nothing to run",
            hint="bot-bottle run AGENT -p 'PROMPT'  or  bot-bottle run AGENT -- CMD [ARG...]",
        )
    if args.prompt_file is None:
        return args.prompt
    try:
        if args.prompt_file == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.prompt_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BotBottleError(f"cannot read the prompt from {args.prompt_file}: {exc}") from None
    if not text.strip():
        raise BotBottleError(f"the prompt in {args.prompt_file} is empty")
    return text


def _since_process_start() -> float | None:
    """Seconds since this process started (Linux: /proc), else None."""
    import os
    from pathlib import Path

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.cli.launch_common import plan_for
    from bot_bottle.launcher import execute

    # Checked before the plan: a usage slip creates nothing and reads no secret.
    prompt = _prompt(args)
    t_plan = time.monotonic()
    startup = _since_process_start()
    launch = plan_for(args, args.agent, interactive=False)
    plan = launch.plan
    planned = time.monotonic() - t_plan
    report = execute(
        plan,
        backend=launch.backend,
        provider=launch.provider,
        mode="run",
        argv=list(args.cmd),
        prompt=prompt,
        options=launch.options,
    )
    if args.timings:
        # startup: interpreter and imports up to here; plan: manifests,
        # plugins, secrets. The backend's phases follow in launch order.
        first = {"startup": startup, "plan": planned} if startup is not None else {"plan": planned}
        timings = {**first, **report.timings}
        parts = " ".join(f"{k}={v:.2f}s" for k, v in timings.items())
        sys.stderr.write(f"timings: {parts}\n")
    if report.preserved:
        sys.stderr.write(f"state kept for {plan.slug} (exit {report.exit_code})\n")
    return report.exit_code
