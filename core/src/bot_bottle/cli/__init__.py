"""The ``bot-bottle`` command.

argparse, not a heavier framework, and every subcommand imports its real work
inside ``run``: ``bot-bottle --help`` must stay fast (see bench/cli_startup.py).
Errors are caught here, at the boundary, and printed as a message and a hint;
tracebacks are for ``BOT_BOTTLE_DEBUG=1`` only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bot_bottle import __version__
from bot_bottle.cli import (
    audit_cmd,
    cleanup_cmd,
    commit_cmd,
    dlp_cmd,
    doctor,
    egress_cmd,
    gate_cmd,
    info,
    init_cmd,
    list_cmd,
    logs_cmd,
    plugins_cmd,
    proposals_cmd,
    resume_cmd,
    run_cmd,
    schema_cmd,
    setup_cmd,
    snapshots_cmd,
    start_cmd,
    supervise_cmd,
    validate,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports

_COMMANDS = (
    plugins_cmd,
    doctor,
    setup_cmd,
    list_cmd,
    info,
    validate,
    schema_cmd,
    init_cmd,
    dlp_cmd,
    start_cmd,
    run_cmd,
    commit_cmd,
    resume_cmd,
    snapshots_cmd,
    cleanup_cmd,
    supervise_cmd,
    proposals_cmd,
    egress_cmd,
    audit_cmd,
    logs_cmd,
    gate_cmd,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's default prints usage and exits 2; keep that, add a hint.
        self.print_usage(sys.stderr)
        sys.stderr.write(f"error: {message}\nhint: run '{self.prog} --help' for usage\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bot-bottle",
        description="Run coding agents in bottles they cannot modify.",
    )
    parser.add_argument("--version", action="version", version=f"bot-bottle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse mishandles '--' inside subcommands: split it off here; the
    # command (``run AGENT -- CMD...``) gets everything after it as ``cmd``.
    rest: list[str] | None = None
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    if rest is not None:
        if not hasattr(args, "cmd"):
            parser.error("'--' is only used by 'bot-bottle run AGENT -- CMD...' and 'resume'")
        args.cmd = [*args.cmd, *rest]
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from bot_bottle.log import set_default_level

    set_default_level("DEBUG" if args.verbose else "INFO")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `bot-bottle schema | head`: the reader went away, which is not an
        # error. Point stdout at devnull so the interpreter's final flush
        # does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        from bot_bottle.errors import BotBottleError

        if os.environ.get("BOT_BOTTLE_DEBUG"):
            raise
        from bot_bottle.termtext import visible

        # Messages quote names from repositories and agents: escaped here,
        # at the one place errors reach the terminal.
        # A wrapped error whose cause is a refused connection (an engine that
        # died under an exec) gets the same words as an unwrapped one.
        if isinstance(exc, BotBottleError) and not (exc.hint is None and _lost_connection(exc)):
            sys.stderr.write(f"error: {visible(exc.message, allow_newlines=True)}\n")
            if exc.hint:
                sys.stderr.write(f"hint: {visible(exc.hint, allow_newlines=True)}\n")
            return 1
        if _lost_connection(exc):
            # The engine (or another service) went away mid-command: a fault
            # of the machine, not a bug; what is left is for list/cleanup.
            sys.stderr.write(
                f"error: lost the connection to a service bot-bottle was using (the container "
                f"engine?): {visible(str(exc), allow_newlines=True)}\n"
                "hint: if the engine stopped or restarted, start it; then 'bot-bottle list "
                "active' shows what still runs and 'bot-bottle cleanup' removes what is left\n"
            )
            return 1
        sys.stderr.write(
            f"internal error: {type(exc).__name__}: {visible(str(exc), allow_newlines=True)}\n"
            "hint: this is a bug in bot-bottle or a plugin; rerun with BOT_BOTTLE_DEBUG=1 "
            "for a traceback and report it\n"
        )
        return EXIT_INTERNAL


def entry() -> None:
    """The ``bot-bottle`` program: :func:`main`, then out without the
    interpreter's finalization, which with a launch's ~1,000 modules took
    0.1-0.3 s after the bottle was gone. Only when nothing else runs (one
    thread left); the atexit handlers run and stdio is flushed first, as the
    normal exit would."""
    import atexit
    import threading

    code = main()
    if threading.active_count() != 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # pyright: ignore[reportPrivateUsage]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # the normal exit reports or ignores it, as before
    os._exit(code)


def _lost_connection(exc: BaseException) -> bool:
    """A refused or reset connection anywhere in the chain (the Docker SDK
    wraps it in requests' and urllib3's own errors)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ConnectionError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
