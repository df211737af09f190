"""``bot-bottle supervise``: the operator console (Textual), from the
``bot-bottle-console`` distribution. Core works without it."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "supervise", help="the operator console: bottles, proposals, live egress (TUI)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.errors import BotBottleError

    try:
        from bot_bottle_console.app import main
    except ImportError as exc:
        raise BotBottleError(
            f"the operator console is not installed ({exc.name or exc})",
            hint="install the bot-bottle-console distribution (pip install bot-bottle-console); "
            "the headless commands 'bot-bottle proposals' and 'bot-bottle egress' work without it",
        ) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise BotBottleError(
            "bot-bottle supervise needs a terminal",
            hint="for scripts use 'bot-bottle proposals' and 'bot-bottle egress'",
        )
    return main()
