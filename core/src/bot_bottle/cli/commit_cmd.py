"""``bot-bottle commit [SLUG] [--name NAME]``: freeze a bottle's agent as a snapshot."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "commit",
        help="snapshot a running or preserved bottle's agent (resume it with 'resume')",
        description=(
            "Freeze the agent of bottle SLUG (running, or kept after a non-zero exit) into "
            "a snapshot: its filesystem without /tmp, /var/tmp and the bottle CA, plus a "
            "record of its policy in ~/.bot-bottle/snapshots/NAME.json. Every file the "
            "bottle added or changed is scanned for secrets first; a finding refuses the "
            "commit and names the files."
        ),
    )
    p.add_argument("slug", nargs="?", help="the bottle (omitted: pick one on a terminal)")
    p.add_argument("--name", help="snapshot name (default: the slug)")
    p.set_defaults(handler=run)


def pick_bottle() -> str:
    import sys

    from bot_bottle.errors import BotBottleError
    from bot_bottle.state import all_states
    from bot_bottle.termtext import visible

    states = [s for s in all_states() if s.metadata() and (s.preserved or s.owner_alive)]
    if not states:
        raise BotBottleError("no bottle to commit", hint="'bot-bottle list active'")
    if not sys.stdin.isatty():
        raise BotBottleError(
            "no SLUG given and no terminal to pick one on",
            hint="bot-bottle commit SLUG (see 'bot-bottle list active')",
        )
    for i, s in enumerate(states, 1):
        how = "preserved" if s.preserved else "running"
        agent = visible(str(s.metadata().get("agent", "?")), limit=60)
        sys.stderr.write(f"  {i}) {s.slug}  (agent {agent}, {how})\n")
    answer = input("bottle number: ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(states):
        raise BotBottleError(f"{visible(answer, limit=40)!r} is not one of the numbers shown")
    return states[int(answer) - 1].slug


def print_refusal(exc: Any) -> None:
    import sys

    from bot_bottle.termtext import visible

    for path, found in sorted(exc.findings.items()):
        sys.stderr.write(f"  {visible(path, limit=200)}\n")
        for line in found:
            sys.stderr.write(f"    {visible(line, limit=300)}\n")


def run(args: argparse.Namespace) -> int:
    import sys

    from bot_bottle.contracts.freezer import SnapshotRefused
    from bot_bottle.plugins import PluginHost
    from bot_bottle.snapshots import commit_bottle

    slug = args.slug or pick_bottle()
    host = PluginHost().load()
    try:
        record = commit_bottle(
            slug, args.name, host=host, progress=lambda line: sys.stderr.write(f"  {line}\n")
        )
    except SnapshotRefused as exc:
        print_refusal(exc)
        raise
    print(f"snapshot {record.name}: image {record.image[:19]} (resume with "
          f"'bot-bottle resume {record.name}')")  # fmt: skip
    return 0
