"""Where bot-bottle keeps its files.

``BOT_BOTTLE_HOME`` overrides ``~/.bot-bottle`` (tests and multi-profile use).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "BOT_BOTTLE_HOME"


def home_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    override = env.get(ENV_HOME)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".bot-bottle"


def contrib_dir(environ: dict[str, str] | None = None) -> Path:
    return home_dir(environ) / "contrib"


def state_dir(environ: dict[str, str] | None = None) -> Path:
    return home_dir(environ) / "state"
