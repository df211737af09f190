"""The record of every deploy key a bottle asked a forge for.

One JSON file per key in ``<state dir>/deploy-keys/``, written (and fsynced)
*before* the forge is asked, updated with the forge's id the moment it
answers, removed once the key is revoked. A launcher killed at any point
therefore leaves a record, and ``bot-bottle cleanup`` revokes what the
records name; a revocation that fails stays recorded (with the reason) so
``cleanup`` tries again later.

A record holds the provisioner's name, the bottle, the repo and the
manifest's options for the key (base URL, the *name* of the token variable;
never a token or a private key).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle.errors import BotBottleError

if TYPE_CHECKING:
    from bot_bottle.contracts.keys import KeyProvisioner
    from bot_bottle.plugins import PluginHost

LEDGER_DIR = "deploy-keys"


@dataclass(frozen=True)
class KeyRecord:
    provisioner: str
    bottle_slug: str
    repo_name: str
    host: str
    path: str
    options: Mapping[str, Any]
    read_only: bool = False
    #: The forge's id; None while the forge has not answered yet.
    key_id: str | None = None
    #: Why the last revocation failed, for the operator.
    error: str | None = None
    created_at: str = field(default="")

    def describe(self) -> str:
        key = f"key {self.key_id}" if self.key_id else "key (id not yet known)"
        return f"{self.provisioner} {key} for repo {self.repo_name!r} of bottle {self.bottle_slug}"


@dataclass(frozen=True)
class LedgerEntry:
    path: Path
    record: KeyRecord


class KeyLedger:
    def __init__(self, state_path: Path) -> None:
        self.dir = state_path / LEDGER_DIR

    def begin(self, record: KeyRecord) -> LedgerEntry:
        """Record a key about to be asked for (no id yet)."""
        from bot_bottle.state import now_iso

        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = LedgerEntry(
            self.dir / f"{record.repo_name}-{uuid.uuid4().hex[:8]}.json",
            replace(record, created_at=record.created_at or now_iso()),
        )
        _write(entry)
        return entry

    def created(self, entry: LedgerEntry, key_id: str) -> LedgerEntry:
        updated = LedgerEntry(entry.path, replace(entry.record, key_id=key_id))
        _write(updated)
        return updated

    def failed(self, entry: LedgerEntry, reason: str) -> LedgerEntry:
        updated = LedgerEntry(entry.path, replace(entry.record, error=reason))
        _write(updated)
        return updated

    def done(self, entry: LedgerEntry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()
        _fsync_dir(self.dir)

    def entries(self) -> list[LedgerEntry]:
        try:
            paths = sorted(self.dir.glob("*.json"))
        except OSError:
            return []
        out: list[LedgerEntry] = []
        for path in paths:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                out.append(LedgerEntry(path, KeyRecord(**data)))
            except (OSError, ValueError, TypeError):
                # A torn or foreign file: keep it visible rather than guess.
                out.append(LedgerEntry(path, _unreadable(path)))
        return out


def _unreadable(path: Path) -> KeyRecord:
    return KeyRecord(
        provisioner="?",
        bottle_slug=path.parent.parent.name,
        repo_name=path.stem,
        host="",
        path="",
        options={},
        error=f"unreadable record {path}",
    )


def _write(entry: LedgerEntry) -> None:
    data = asdict(entry.record)
    data["options"] = dict(entry.record.options)
    tmp = entry.path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(entry.path)
    _fsync_dir(entry.path.parent)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory is: a power cut or a
    # SIGKILLed launcher must not lose the record of a live key.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def failure_reason(exc: BaseException) -> str:
    """What a log line and a record say about a failed key operation."""
    if isinstance(exc, BotBottleError):
        return exc.message
    return type(exc).__name__


def revoke_recorded(host: PluginHost, ledger: KeyLedger, entry: LedgerEntry) -> str | None:
    """Revoke the key ``entry`` records (``cleanup``'s path: the launcher that
    made it is gone). Returns None when done, else the reason, which is also
    written to the record so the next ``cleanup`` tries again."""
    from pydantic import ValidationError

    from bot_bottle.contracts.keys import KeyRequest
    from bot_bottle.log import get_logger

    rec = entry.record
    try:
        provisioner: KeyProvisioner = host.create("key_provisioners", rec.provisioner)
        options = provisioner.options_model.model_validate(dict(rec.options))
        request = KeyRequest(
            bottle_slug=rec.bottle_slug,
            repo_name=rec.repo_name,
            host=rec.host,
            path=rec.path,
            options=options,
            read_only=rec.read_only,
        )
        # No id: the launcher died while the forge was answering. The title
        # names the bottle and repo, so the forge's list finds the key.
        ids = [rec.key_id] if rec.key_id else provisioner.find_keys(request)
        for key_id in ids:
            provisioner.revoke(request, key_id)
    except ValidationError:
        reason = f"the recorded options are no longer valid for {rec.provisioner!r}"
    except Exception as exc:
        reason = failure_reason(exc)
    else:
        ledger.done(entry)
        get_logger("bot_bottle.gitgate").info(
            "orphan git-gate key revoked", bottle=rec.bottle_slug, repo=rec.repo_name
        )
        return None
    ledger.failed(entry, reason)
    get_logger("bot_bottle.gitgate").error(
        "orphan git-gate key NOT revoked", bottle=rec.bottle_slug, reason=reason
    )
    return reason
