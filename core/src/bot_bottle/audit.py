"""The operator's audit log: ``~/.bot-bottle/audit.jsonl``.

Every decision an operator makes about a bottle — a proposal approved or
rejected, a live egress route added or removed, a refused push let through —
is appended here as one JSON object per line, then fsynced, before the
decision takes effect anywhere else. The log is append-only: nothing in
bot-bottle rewrites or truncates it.

Each record has ``time`` (UTC, ISO 8601), ``user`` (the operator's login
name), ``action`` (a short dotted verb such as ``proposal.approve``,
``egress.allow``, ``gate.allow``), ``bottle`` (slug) and whatever the action
adds: ``proposal``, ``route``, ``before``/``after``, ``comment``. Records
never carry a secret value (callers pass names, ids and hashes).

Appends from several processes are safe: each record is written with one
``write`` on a file opened ``O_APPEND`` while holding an exclusive ``flock``.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir

FILENAME = "audit.jsonl"


class AuditError(BotBottleError):
    """The audit log cannot be written or read."""


def audit_path(environ: Mapping[str, str] | None = None) -> Path:
    return home_dir(dict(environ) if environ is not None else None) / FILENAME


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def record(
    action: str,
    *,
    bottle: str | None = None,
    path: Path | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Append one record and fsync it; return what was written.

    Raises :class:`AuditError` when the log cannot be written: a caller must
    not apply a decision that could not be recorded.
    """
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "user": _operator(),
        "action": action,
    }
    if bottle is not None:
        entry["bottle"] = bottle
    entry.update({k: v for k, v in fields.items() if v is not None})
    line = (json.dumps(entry, sort_keys=True, ensure_ascii=True, default=str) + "\n").encode()
    target = path or audit_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AuditError(
            f"cannot write the audit log {target}: {exc.strerror or exc}",
            hint=(
                "free disk space or fix the permissions of that file; the decision was not applied"
            ),
        ) from exc
    return entry


def read(*, since: datetime | None = None, path: Path | None = None) -> Iterator[dict[str, Any]]:
    """Records in the order they were written, optionally only those at or
    after ``since``. A line that is not a JSON object (a torn write after a
    crash) is skipped rather than hiding everything after it."""
    target = path or audit_path()
    try:
        fh = target.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(f"cannot read the audit log {target}: {exc.strerror or exc}") from exc
    with fh:
        for raw in fh:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if since is not None:
                try:
                    when = datetime.fromisoformat(str(entry.get("time", "")).replace("Z", "+00:00"))
                except ValueError:
                    continue
                if when < since:
                    continue
            yield entry
