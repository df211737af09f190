"""What an approved ``capability-block`` leaves behind.

The approved Dockerfile snippet is appended to
``~/.bot-bottle/state/<slug>/capabilities.json``: a JSON list of
``{"proposal": id, "dockerfile": text, "approved_at": iso8601, "comment": str|null}``,
rewritten atomically. Nothing changes in the running bottle: ``bot-bottle
commit`` copies the list into the snapshot record and ``resume`` builds the
agent image with the snippets applied (the commit/resume work owns that half).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from bot_bottle.contracts.supervise import atomic_write
from bot_bottle.errors import BotBottleError

FILENAME = "capabilities.json"
#: What the console shows before the operator approves, and what
#: capability-status tells the agent after.
EFFECT = (
    "Approved: the Dockerfile snippet is recorded for this bottle and applied when the "
    "bottle is committed and resumed (bot-bottle commit, then resume). The running "
    "bottle does not change."
)
EFFECT_SHORT = "recorded; applied when this bottle is committed and resumed"


def capabilities_path(state_dir: Path) -> Path:
    return state_dir / FILENAME


def read_capabilities(state_dir: Path) -> list[dict[str, Any]]:
    path = capabilities_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise BotBottleError(
            f"{path} is unreadable: {exc}",
            hint="fix or move the file; it lists the bottle's approved capability blocks",
        ) from None
    if not isinstance(data, list):
        raise BotBottleError(f"{path} is not a JSON list", hint="fix or move the file")
    return data


def record_capability(
    state_dir: Path, proposal_id: str, dockerfile: str, *, at: datetime, comment: str | None
) -> list[dict[str, Any]]:
    """Append one approved snippet; return the whole list as written."""
    entries = read_capabilities(state_dir)
    entries.append(
        {
            "proposal": proposal_id,
            "dockerfile": dockerfile,
            "approved_at": at.isoformat(),
            "comment": comment or None,
        }
    )
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(
            capabilities_path(state_dir),
            (json.dumps(entries, indent=2) + "\n").encode(),
            mode=0o600,
        )
    except OSError as exc:
        raise BotBottleError(
            f"cannot record the capability in {state_dir}: {exc.strerror or exc}",
            hint="check that the bottle's state directory is writable",
        ) from None
    return entries
