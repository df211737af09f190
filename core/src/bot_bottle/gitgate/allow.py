"""The operator's override for a push refused by a false positive.

A refused push names each finding by an id computed from stable fields
only -- the commit, the part (file content, file name, commit message, ...),
the path, the detector and rule, and the SHA-256 of the matched bytes
(never the bytes) -- so the same content pushed again has the same ids,
and a different secret in the same file and commit has another.

``bot-bottle gate allow SLUG FINDING`` records the decision in the audit
log, then adds the id to ``allow.json`` in the bottle's allow directory,
which the bundle mounts read-only for git-gate (the agent never sees it).
git-gate's pre-receive hook reads it on every push and lets exactly those
findings pass; everything else in the push is scanned and blocks as usual.
The file is validated strictly; a file that does not validate allows
nothing (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot_bottle.errors import BotBottleError

ALLOW_FILE = "allow.json"
FINDING_ID_RE = re.compile(r"^gf-[0-9a-f]{20}$")
#: Allowances one bottle may hold; a bigger file is refused as a whole.
MAX_ENTRIES = 1000
MAX_COMMENT = 1000

FindingIdStr = Annotated[str, Field(pattern=FINDING_ID_RE.pattern)]


class AllowError(BotBottleError):
    """An override cannot be recorded or read."""


def host_dir(slug: str) -> Path:
    """The running bottle's allow directory on the host (mounted read-only
    into the bundle at ``bot_bottle_sidecars.layout.GATE_ALLOW_DIR``)."""
    from bot_bottle.state import StateDir

    return StateDir.for_slug(slug).run_dir / "gate-allow"


def match_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def finding_id(
    *, commit: str | None, part: str, path: str | None, detector: str, rule: str, match: str
) -> str:
    """``gf-`` and 20 hex digits of a hash over the finding's stable fields;
    ``match`` is :func:`match_sha256` of the matched bytes ("" when unknown)."""
    fields = [commit or "", part, path or "", detector, rule, match]
    digest = hashlib.sha256("\0".join(fields).encode("utf-8", "surrogateescape")).hexdigest()
    return f"gf-{digest[:20]}"


def check_finding_id(value: str) -> str:
    if not FINDING_ID_RE.fullmatch(value):
        raise AllowError(
            f"invalid finding id {value!r}",
            hint="copy the id from git-gate's refusal, e.g. [finding gf-0123456789abcdef0123]",
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllowEntry(_Model):
    finding: FindingIdStr
    allowed_at: datetime
    #: Context for people only (the audit log has it too); never a secret.
    rule: Annotated[str, Field(max_length=200)] = ""
    comment: Annotated[str, Field(max_length=MAX_COMMENT)] = ""


class AllowList(_Model):
    schema_version: Literal[1] = 1
    entries: Annotated[list[AllowEntry], Field(max_length=MAX_ENTRIES)] = []


def load(path: Path) -> AllowList:
    """The allow list at ``path``; a missing file is an empty list, an invalid
    one an :class:`AllowError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return AllowList()
    except OSError as exc:
        raise AllowError(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > 1024 * 1024:
        raise AllowError(f"{path} is larger than 1 MiB")
    try:
        return AllowList.model_validate_json(raw)
    except ValidationError as exc:
        raise AllowError(
            f"{path} is not a valid allow list ({exc.error_count()} problem(s))",
            hint="it is written only by 'bot-bottle gate allow'",
        ) from None


def allowed_ids(path: Path) -> frozenset[str]:
    return frozenset(e.finding for e in load(path).entries)


def add(directory: Path, finding: str, *, rule: str = "", comment: str = "") -> AllowEntry:
    """Add ``finding`` to the allow list in ``directory`` (atomic replace:
    the directory is bind-mounted, so git-gate sees the new file at once)."""
    from bot_bottle.contracts.supervise import atomic_write

    check_finding_id(finding)
    if len(comment) > MAX_COMMENT:
        raise AllowError(f"the comment is longer than {MAX_COMMENT} characters")
    path = directory / ALLOW_FILE
    current = load(path)
    if len(current.entries) >= MAX_ENTRIES:
        raise AllowError(f"this bottle already has {MAX_ENTRIES} allowed findings")
    entry = AllowEntry(
        finding=finding, allowed_at=datetime.now(UTC), rule=rule[:200], comment=comment
    )
    updated = AllowList(entries=[*current.entries, entry])
    atomic_write(path, updated.model_dump_json(indent=2).encode() + b"\n", mode=0o644)
    return entry


def describe(found: Mapping[str, object]) -> str:
    """One line about a logged finding: rule, path, commit (no snippet)."""
    bits = [f"{found.get('detector', '?')}/{found.get('rule', '?')}"]
    if found.get("path"):
        bits.append(f"in {found['path']}")
    if found.get("commit"):
        bits.append(f"commit {str(found['commit'])[:12]}")
    return " ".join(bits)


def dumps(entry: AllowEntry) -> str:
    return json.dumps(entry.model_dump(mode="json"))
