"""The supervise queue: proposals an agent makes and the operator's answers.

Both sides import this module: the supervise MCP server inside the sidecar
bundle writes proposals, the host (``bot-bottle supervise``) writes responses.
The queue is a plain directory per bottle, bind-mounted into the bundle as a
*directory* (a single-file bind mount pins the inode, so a rename on one side
would never be seen on the other).

Layout, one pair of files per proposal::

    <queue>/<id>.proposal.json   written once by the bundle
    <queue>/<id>.response.json   written once by the host when decided

Every write goes to a temporary file in the same directory and is renamed into
place, so a reader sees either nothing or a complete document. A proposal
without a response is *pending*. Nothing blocks waiting for a human: MCP
clients cut tool calls at about 60 s, so the agent polls instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

# Re-exported: the queue's users import them from here.
from bot_bottle.contracts.supervise_paths import SLUG_RE as SLUG_RE
from bot_bottle.contracts.supervise_paths import QueueError as QueueError
from bot_bottle.contracts.supervise_paths import check_slug as _check_slug
from bot_bottle.contracts.supervise_paths import default_queue_dir as default_queue_dir
from bot_bottle.termtext import describe, first_unsafe

SCHEMA_VERSION = 1
#: Proposal ids are generated here and validated on every lookup, so an id
#: taken from an MCP call can never name a path outside the queue directory.
PROPOSAL_ID_RE = re.compile(r"^p-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
#: A proposed Dockerfile is a few kilobytes; the cap keeps one agent from
#: filling the operator's disk through the queue.
MAX_DOCKERFILE_CHARS = 256 * 1024
MAX_TEXT_CHARS = 16 * 1024
#: Unanswered proposals one bottle may have; an agent stuck in a loop must
#: not bury the operator (or the disk) in proposals.
MAX_PENDING = 20

ProposalId = Annotated[str, Field(pattern=PROPOSAL_ID_RE.pattern)]
Slug = Annotated[str, Field(pattern=SLUG_RE.pattern)]


class ProposalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class _Model(BaseModel):
    # Unknown keys are errors: a file from a newer or hand-edited schema must
    # not be half-understood.
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_display_safe(text: str) -> str:
    """Refuse text carrying anything a terminal would interpret or hide.

    The set is :func:`bot_bottle.termtext.is_unsafe`'s: C0/C1 controls (escape
    sequences, a bare carriage return that overwrites the line), bidi
    overrides and isolates, zero-width and other format characters, line and
    paragraph separators, Unicode tags. Tabs, newlines and CRLF line ends are
    ordinary text.
    """
    found = first_unsafe(text, allow_newlines=True)
    if found is not None:
        offset, ch = found
        raise ValueError(
            f"character {describe(ch)} at offset {offset} is not allowed "
            "(control, bidi, zero-width and tag characters could change what the operator sees)"
        )
    return text


DisplayText = Annotated[str, AfterValidator(check_display_safe)]


class CapabilityBlockPayload(_Model):
    """What ``capability-block`` carries: a Dockerfile change and why.

    Both fields are shown to the operator as they are: they must not carry
    anything a terminal would interpret (checked on write and on every read).
    """

    dockerfile: Annotated[DisplayText, Field(min_length=1, max_length=MAX_DOCKERFILE_CHARS)]
    justification: Annotated[DisplayText, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


#: Ports an agent may ask for. Anything else (a database, SSH, a debug port)
#: is an operator's manifest edit, not a request an agent makes.
EGRESS_REQUEST_PORTS: tuple[int, ...] = (443, 80)
MAX_REQUEST_PATHS = 16
_METHOD_RE = re.compile(r"^[A-Z]{1,16}$")


def check_request_host(value: str) -> str:
    """A host an agent may ask for: one exact DNS name (no wildcard, no IP
    literal, no port), lower-cased."""
    from bot_bottle.egress.config import is_ip_literal, normalize_host

    raw = value.strip()
    if "*" in raw:
        raise ValueError(
            f"{raw!r} is a wildcard; ask for each exact host name (egress matches exact hosts)"
        )
    if ":" in raw or "/" in raw or "@" in raw:
        raise ValueError(f"{raw!r} is not a bare host name (give ports and paths separately)")
    if is_ip_literal(raw):
        raise ValueError(f"{raw!r} is an IP address; egress routes name hosts")
    return normalize_host(raw)


def _check_ports(ports: tuple[int, ...]) -> tuple[int, ...]:
    bad = [p for p in ports if p not in EGRESS_REQUEST_PORTS]
    if bad:
        allowed = ", ".join(str(p) for p in EGRESS_REQUEST_PORTS)
        raise ValueError(f"port(s) {bad} not allowed; an agent may ask for {allowed}")
    return tuple(dict.fromkeys(ports))


def _check_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        check_display_safe(path)
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValueError(f"path {path!r} must start with '/' and hold no whitespace")
    return tuple(dict.fromkeys(paths))


def _check_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for m in methods:
        up = m.upper()
        if not _METHOD_RE.fullmatch(up) or up in ("TRACE", "TRACK", "CONNECT"):
            raise ValueError(f"{m!r} is not an HTTP method an agent may ask for")
        out.append(up)
    return tuple(dict.fromkeys(out))


class EgressRoutePayload(_Model):
    """What ``egress-request`` carries: one host (optionally restricted to
    path prefixes and methods) and why. No credential: a route that needs one
    is the operator's to configure."""

    host: Annotated[str, Field(min_length=1, max_length=253), AfterValidator(check_request_host)]
    ports: Annotated[tuple[int, ...], Field(max_length=2), AfterValidator(_check_ports)] = ()
    paths: Annotated[
        tuple[Annotated[str, Field(max_length=1024)], ...],
        Field(max_length=MAX_REQUEST_PATHS),
        AfterValidator(_check_paths),
    ] = ()
    methods: Annotated[tuple[str, ...], Field(max_length=16), AfterValidator(_check_methods)] = ()
    justification: Annotated[DisplayText, Field(min_length=1, max_length=MAX_TEXT_CHARS)]

    def route(self) -> dict[str, object]:
        """The route as the manifest writes it (``egress.routes[]`` entry)."""
        route: dict[str, object] = {"host": self.host}
        if self.ports:
            route["ports"] = list(self.ports)
        if self.paths or self.methods:
            match: dict[str, object] = {}
            if self.paths:
                match["paths"] = [{"type": "prefix", "value": p} for p in self.paths]
            if self.methods:
                match["methods"] = list(self.methods)
            route["matches"] = [match]
        return route


Tool = Literal["capability-block", "egress-route"]


class Proposal(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    id: ProposalId
    bottle_slug: Slug
    tool: Tool = "capability-block"
    created_at: datetime
    payload: CapabilityBlockPayload | EgressRoutePayload

    @model_validator(mode="after")
    def _payload_matches_tool(self) -> Proposal:
        want = CapabilityBlockPayload if self.tool == "capability-block" else EgressRoutePayload
        if not isinstance(self.payload, want):
            raise ValueError(f"a {self.tool} proposal needs a {want.__name__}")
        return self


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class Response(_Model):
    """The operator's answer; ``dockerfile`` is set when the operator edited it."""

    schema_version: Literal[1] = SCHEMA_VERSION
    proposal_id: ProposalId
    bottle_slug: Slug
    tool: Tool = "capability-block"
    decided_at: datetime
    decision: Decision
    comment: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = ""
    dockerfile: Annotated[str | None, Field(max_length=MAX_DOCKERFILE_CHARS)] = None
    #: egress-route: the route as applied (the operator may have narrowed it).
    route: dict[str, Any] | None = None
    #: What the approval did, in words the agent can act on.
    effect: Annotated[str, Field(max_length=MAX_TEXT_CHARS)] = ""


class ProposalState(_Model):
    """What a poll returns: the proposal's status and, once decided, the answer."""

    proposal_id: ProposalId
    status: ProposalStatus
    created_at: datetime
    response: Response | None = None


def now() -> datetime:
    return datetime.now(UTC)


def new_proposal_id(at: datetime | None = None) -> str:
    stamp = (at or now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"p-{stamp}-{secrets.token_hex(6)}"


def check_proposal_id(proposal_id: str) -> str:
    if not PROPOSAL_ID_RE.fullmatch(proposal_id):
        raise QueueError(
            f"invalid proposal id {proposal_id!r}",
            hint="use the proposal_id exactly as capability-block returned it",
        )
    return proposal_id


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The temporary file lives in the same directory (a rename is atomic only
    within one filesystem) and is fsynced first, so a crash leaves either the
    old state or the complete new file, never a torn one.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # Readable by the host user whatever the container's umask was.
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


class SuperviseQueue:
    """One bottle's queue directory."""

    def __init__(self, directory: Path, bottle_slug: str) -> None:
        _check_slug(bottle_slug)
        self.directory = directory
        self.bottle_slug = bottle_slug

    def _proposal_path(self, proposal_id: str) -> Path:
        return self.directory / f"{check_proposal_id(proposal_id)}.proposal.json"

    def _response_path(self, proposal_id: str) -> Path:
        return self.directory / f"{check_proposal_id(proposal_id)}.response.json"

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueError(
                f"cannot create the supervise queue {self.directory}: {exc.strerror}",
                hint="check that the queue directory is mounted and writable",
            ) from exc

    def submit(
        self,
        payload: CapabilityBlockPayload | EgressRoutePayload,
        *,
        max_pending: int = MAX_PENDING,
    ) -> Proposal:
        """Write a new pending proposal and return it (never waits)."""
        self._ensure_dir()
        # Count and write under one lock: concurrent calls (the server runs
        # each in a thread) would otherwise all see room and pass the cap.
        with self._dir_lock():
            waiting = sum(1 for pid in self.proposal_ids() if not self._response_path(pid).exists())
            if waiting >= max_pending:
                raise QueueError(
                    f"{waiting} proposals are already waiting for the operator",
                    hint="poll capability-status for the earlier ones before proposing more",
                )
            created = now()
            proposal = Proposal(
                id=new_proposal_id(created),
                bottle_slug=self.bottle_slug,
                tool="egress-route"
                if isinstance(payload, EgressRoutePayload)
                else "capability-block",
                created_at=created,
                payload=payload,
            )
            self._write(self._proposal_path(proposal.id), proposal)
        return proposal

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        # flock on the directory itself: no lock file in the queue, and each
        # open() is its own lock owner, so threads exclude each other too.
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise QueueError(
                f"cannot open the supervise queue {self.directory}: {exc.strerror}",
                hint="check that the queue directory is mounted and readable",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def respond(
        self,
        proposal_id: str,
        decision: Decision,
        *,
        comment: str = "",
        dockerfile: str | None = None,
        route: dict[str, Any] | None = None,
        effect: str = "",
    ) -> Response:
        """Record the operator's answer; a proposal is answered once."""
        proposal = self.load_proposal(proposal_id)
        path = self._response_path(proposal_id)
        # Under the lock: two consoles answering at once must not both win.
        with self._dir_lock():
            if path.exists():
                raise QueueError(
                    f"proposal {proposal_id} was already answered",
                    hint="a decision is final; the agent can make a new proposal",
                )
            response = self._respond_locked(
                proposal,
                decision,
                comment=comment,
                dockerfile=dockerfile,
                route=route,
                effect=effect,
            )
        return response

    def _respond_locked(
        self,
        proposal: Proposal,
        decision: Decision,
        *,
        comment: str,
        dockerfile: str | None,
        route: dict[str, Any] | None,
        effect: str,
    ) -> Response:
        path = self._response_path(proposal.id)
        response = Response(
            proposal_id=proposal.id,
            bottle_slug=proposal.bottle_slug,
            tool=proposal.tool,
            decided_at=now(),
            decision=decision,
            comment=comment,
            dockerfile=dockerfile,
            route=route,
            effect=effect,
        )
        self._write(path, response)
        return response

    def load_proposal(self, proposal_id: str) -> Proposal:
        return self._read(self._proposal_path(proposal_id), Proposal, proposal_id)

    def load_response(self, proposal_id: str) -> Response | None:
        path = self._response_path(proposal_id)
        if not path.exists():
            return None
        return self._read(path, Response, proposal_id)

    def state(self, proposal_id: str) -> ProposalState:
        proposal = self.load_proposal(proposal_id)
        response = self.load_response(proposal_id)
        status = ProposalStatus.PENDING if response is None else ProposalStatus(response.decision)
        return ProposalState(
            proposal_id=proposal.id,
            status=status,
            created_at=proposal.created_at,
            response=response,
        )

    def proposal_ids(self) -> list[str]:
        """Every proposal id in the directory, oldest first (ids sort by time)."""
        if not self.directory.is_dir():
            return []
        suffix = ".proposal.json"
        ids = [
            p.name.removesuffix(suffix)
            for p in self.directory.iterdir()
            if p.name.endswith(suffix) and PROPOSAL_ID_RE.fullmatch(p.name.removesuffix(suffix))
        ]
        return sorted(ids)

    def pending(self) -> list[Proposal]:
        return [
            self.load_proposal(pid)
            for pid in self.proposal_ids()
            if not self._response_path(pid).exists()
        ]

    def _write(self, path: Path, model: BaseModel) -> None:
        try:
            atomic_write(path, model.model_dump_json(indent=2).encode() + b"\n")
        except OSError as exc:
            raise QueueError(
                f"cannot write {path.name} to the supervise queue: {exc.strerror}",
                hint=f"check that {self.directory} is writable",
            ) from exc

    def _read[M: BaseModel](self, path: Path, model: type[M], proposal_id: str) -> M:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise QueueError(
                f"no proposal {proposal_id} in this bottle's queue",
                hint="use a proposal_id that capability-block returned",
            ) from None
        except OSError as exc:
            raise QueueError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise QueueError(
                f"{path} is not a valid {model.__name__.lower()} file "
                f"({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']})",
                hint="remove or fix the file; queue files are written only by bot-bottle",
            ) from exc
