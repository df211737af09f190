"""Where a bottle's supervise queue lives, without the queue's models.

Split from :mod:`bot_bottle.contracts.supervise` (which re-exports all of
this) because every launch needs the queue's path, and importing the
module that defines the proposal models builds their pydantic schemas:
~15 ms of the launcher's CPU for a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class QueueError(BotBottleError):
    """The queue directory or one of its files cannot be used."""


def default_queue_dir(slug: str, environ: dict[str, str] | None = None) -> Path:
    """The host-side queue directory of one bottle."""
    check_slug(slug)
    return home_dir(environ) / "supervise" / slug


def check_slug(slug: str) -> None:
    if not SLUG_RE.fullmatch(slug):
        raise QueueError(
            f"invalid bottle slug {slug!r}",
            hint="slugs are lower-case letters, digits, '.', '_' and '-' (at most 63)",
        )
