"""Command line of init: run a plan, or talk to a running init (``ctl``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO, cast

from bot_bottle.log import configure_logging, get_logger
from bot_bottle_sidecars.init.plan import DEFAULT_CONTROL_SOCKET, PlanError, load_plan

ENV_PLAN = "BOT_BOTTLE_INIT_PLAN"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot_bottle_sidecars.init",
        description="Supervise the sidecar daemons of a bot-bottle bundle (PID 1).",
    )
    parser.add_argument(
        "--plan",
        type=Path,
        default=os.environ.get(ENV_PLAN),
        help=f"the JSON plan naming the daemons (default: ${ENV_PLAN})",
    )
    sub = parser.add_subparsers(dest="command")
    ctl = sub.add_parser("ctl", help="send a command to the running init")
    ctl.add_argument("--socket", default=DEFAULT_CONTROL_SOCKET)
    ctl.add_argument("action", choices=["status", "restart", "reload"])
    ctl.add_argument("daemon", nargs="?", help="for restart: the daemon to restart")
    return parser


def _ctl(args: argparse.Namespace) -> int:
    from bot_bottle_sidecars.init.supervisor import RELOAD_ANSWER_SECONDS, control_request

    if args.action == "restart" and not args.daemon:
        sys.stderr.write("error: restart needs the daemon's name\n")
        return 2
    request = {"cmd": args.action}
    if args.daemon:
        request["daemon"] = args.daemon
    try:
        # A reload is answered once the daemons have reported how it went.
        reply = control_request(args.socket, request, timeout=RELOAD_ANSWER_SECONDS + 5)
    except (OSError, ValueError) as exc:
        sys.stderr.write(
            f"error: cannot talk to init at {args.socket}: {exc}\n"
            "hint: is the bundle running, and are you root inside it?\n"
        )
        return 1
    # The command's output (the reply), not a diagnostic.
    sys.stdout.write(json.dumps(reply, indent=2) + "\n")
    return 0 if reply.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "ctl":
        return _ctl(args)
    configure_logging("json", level=os.environ.get("BOT_BOTTLE_LOG_LEVEL", "INFO"))
    log = get_logger("init")
    if args.plan is None:
        log.error("init_no_plan", hint=f"pass --plan PATH or set {ENV_PLAN}")
        return 2
    try:
        plan = load_plan(args.plan)
    except PlanError as exc:
        log.error("init_plan_invalid", error=exc.message, hint=exc.hint)
        return 2
    from bot_bottle_sidecars.init.supervisor import Supervisor, _stdout_buffer

    sink = None
    if plan.log_dir is not None:
        from bot_bottle_sidecars.init.logsink import LineStream, LogSink

        sink = LogSink(Path(plan.log_dir), plan.log_max_bytes, plan.log_keep, echo=_stdout_buffer())
        # Init's own events (a daemon exited, a restart) are kept with the rest.
        configure_logging(
            "json",
            level=os.environ.get("BOT_BOTTLE_LOG_LEVEL", "INFO"),
            stream=cast("TextIO", LineStream(sink)),
        )
    return Supervisor(plan, sink=sink).run()
