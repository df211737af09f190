"""``bot-bottle init``: create ``~/.bot-bottle/`` with commented examples.

Never overwrites a file that exists: running it again only adds what is
missing.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "init", help="create ~/.bot-bottle/ with example bottles and agents (never overwrites)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os

    from bot_bottle.errors import BotBottleError
    from bot_bottle.manifest.starter import FILES
    from bot_bottle.paths import home_dir

    home = home_dir()
    for sub in ("bottles", "agents", "contrib"):
        try:
            # 0700: bottles may hold literal credentials. Existing
            # directories keep the mode their owner gave them.
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BotBottleError(
                f"cannot create {home / sub}: {exc.strerror or exc}",
                hint="check permissions, or point BOT_BOTTLE_HOME somewhere writable",
            ) from None
    for rel, text in FILES.items():
        path = home / rel
        try:
            # O_EXCL: fails if the file exists, with no window between a
            # check and the write in which a user's file could be replaced.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            print(f"kept     {path} (exists)")
            continue
        except OSError as exc:
            raise BotBottleError(f"cannot write {path}: {exc.strerror or exc}") from None
        print(f"created  {path}")
    print("next: edit the files, then run 'bot-bottle validate' and 'bot-bottle list agents'")
    return 0
