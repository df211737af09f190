"""What outlives a bottle: ``~/.bot-bottle/history/<slug>/``.

* ``bottle.json``: slug, agent, bottle, backend, label, started_at, ended_at.
* ``logs/``: the sidecar bundle's init writes each daemon's output there
  as JSON lines (``egress.jsonl``, ``git-gate.jsonl``, ``supervise.jsonl``,
  ``relay.jsonl``, ``init.jsonl``), rotated by size (``<name>.jsonl.1`` ...,
  see ``bot_bottle_sidecars.init.logsink``): at most
  ``(LOG_KEEP + 1) * LOG_MAX_BYTES`` per daemon. It is mounted read-write
  into the bundle where only init (root) can enter, never into the agent.
* ``proposals/``: the bottle's supervise queue (proposals and the
  operator's answers), moved here at teardown.

A separate folder from ``state/<slug>/`` on purpose: state is the running
bottle's (and a preserved one's, for resume) and goes away with it; history
stays until ``bot-bottle cleanup`` removes entries older than the retention
the user sets (``--history-days`` or ``BOT_BOTTLE_HISTORY_DAYS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir

INFO = "bottle.json"
LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_KEEP = 4
ENV_RETENTION = "BOT_BOTTLE_HISTORY_DAYS"
DEFAULT_RETENTION_DAYS = 30
#: The daemon names ``logs --daemon`` accepts (init's own log is ``init``).
DAEMONS = ("egress", "git-gate", "supervise", "relay", "init")


class HistoryError(BotBottleError):
    """A bottle's history cannot be found or read."""


def history_root(environ: Mapping[str, str] | None = None) -> Path:
    return home_dir(dict(environ) if environ is not None else None) / "history"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def retention_days(value: int | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The retention in days: ``value``, else ``BOT_BOTTLE_HISTORY_DAYS``, else 30."""
    if value is not None:
        days = value
    else:
        raw = (environ if environ is not None else os.environ).get(ENV_RETENTION, "")
        if not raw:
            return DEFAULT_RETENTION_DAYS
        try:
            days = int(raw)
        except ValueError:
            raise HistoryError(
                f"{ENV_RETENTION}={raw!r} is not a number of days",
                hint=f"set {ENV_RETENTION} to a whole number of days, e.g. 30",
            ) from None
    if days < 0:
        raise HistoryError("the history retention cannot be negative", hint="use 0 or more days")
    return days


@dataclass(frozen=True)
class BottleHistory:
    path: Path

    @classmethod
    def for_slug(cls, slug: str, root: Path | None = None) -> BottleHistory:
        from bot_bottle.contracts.supervise_paths import SLUG_RE

        if not SLUG_RE.fullmatch(slug):
            raise HistoryError(
                f"invalid bottle slug {slug!r}",
                hint="use a slug as 'bot-bottle list active' or ~/.bot-bottle/history/ shows it",
            )
        return cls((root or history_root()) / slug)

    @property
    def slug(self) -> str:
        return self.path.name

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def proposals_dir(self) -> Path:
        return self.path / "proposals"

    def exists(self) -> bool:
        return (self.path / INFO).is_file()

    def begin(self, info: Mapping[str, Any]) -> None:
        """Create the folder (0700: logs hold URLs and file names) before launch."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.mkdir(exist_ok=True, mode=0o700)
        self.logs_dir.mkdir(exist_ok=True, mode=0o700)
        self._write({**info, "started_at": info.get("started_at") or now_iso(), "ended_at": None})

    def end(self, queue: Path | None = None) -> None:
        """Keep the supervise queue (proposals with their answers) and note the end."""
        if queue is not None and queue.is_dir():
            self.proposals_dir.mkdir(exist_ok=True, mode=0o700)
            for entry in queue.iterdir():
                # Only the queue's own files; temporaries and anything odd stay behind.
                if entry.is_file() and not entry.is_symlink() and entry.name.endswith(".json"):
                    shutil.move(str(entry), self.proposals_dir / entry.name)
            shutil.rmtree(queue, ignore_errors=True)
        self._write({**self.info(), "ended_at": now_iso()})

    def info(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / INFO).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, info: Mapping[str, Any]) -> None:
        tmp = self.path / (INFO + ".tmp")
        tmp.write_text(json.dumps(dict(info), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / INFO)

    @property
    def ended(self) -> bool:
        return bool(self.info().get("ended_at"))

    def last_activity(self) -> datetime:
        """When the bottle ended; for one whose launcher died, its newest file."""
        ended = self.info().get("ended_at")
        if isinstance(ended, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(ended)
        newest = max((p.stat().st_mtime for p in self.path.rglob("*") if p.is_file()), default=0)
        return datetime.fromtimestamp(newest or self.path.stat().st_mtime, UTC)

    def running(self) -> bool:
        """Its launcher is alive (a SIGKILLed launcher never wrote ended_at)."""
        from bot_bottle.state import StateDir, state_root

        return not self.ended and StateDir(state_root() / self.slug).owner_alive

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- reading -----------------------------------------------------------

    def queue_dir(self) -> Path:
        """Where this bottle's proposals are: kept ones, or the live queue."""
        if self.proposals_dir.is_dir():
            return self.proposals_dir
        from bot_bottle.contracts.supervise import default_queue_dir

        return default_queue_dir(self.slug)

    def log_files(self, daemon: str) -> list[Path]:
        """``daemon``'s files, oldest first."""
        current = self.logs_dir / f"{daemon}.jsonl"
        rotated = []
        for p in self.logs_dir.glob(f"{daemon}.jsonl.*"):
            suffix = p.name.rsplit(".", 1)[1]
            if suffix.isdigit():
                rotated.append((int(suffix), p))
        return [p for _, p in sorted(rotated, reverse=True)] + [current]


def all_histories(root: Path | None = None) -> list[BottleHistory]:
    base = root or history_root()
    try:
        return [BottleHistory(p) for p in sorted(base.iterdir()) if (p / INFO).is_file()]
    except OSError:
        return []


def expired(
    histories: Iterable[BottleHistory], days: int, *, now: datetime | None = None
) -> list[BottleHistory]:
    """Histories of bottles that ended (or whose launcher is gone) more than
    ``days`` ago. A running bottle's history is never expired."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    out: list[BottleHistory] = []
    for h in histories:
        if h.running():
            continue
        if h.last_activity() < cutoff:
            out.append(h)
    return out


# -- records --------------------------------------------------------------------


def _parse(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _ts(value: Any) -> str:
    """A sortable UTC stamp (``...Z``) from a datetime or ISO string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ""


def proposal_records(queue_dir: Path, slug: str) -> list[dict[str, Any]]:
    """Each proposal and each answer as a ``supervise`` record."""
    from bot_bottle.contracts.supervise import EgressRoutePayload, QueueError, SuperviseQueue

    queue = SuperviseQueue(queue_dir, slug)
    out: list[dict[str, Any]] = []
    for pid in queue.proposal_ids():
        try:
            state = queue.state(pid)
            proposal = queue.load_proposal(pid)
        except QueueError as exc:
            bad = {"timestamp": "", "daemon": "supervise", "level": "warning"}
            out.append({**bad, "event": "unreadable proposal", "proposal_id": pid,
                        "error": exc.message})  # fmt: skip
            continue
        entry: dict[str, Any] = {
            "timestamp": _ts(proposal.created_at),
            "daemon": "supervise",
            "level": "info",
            "event": "proposal",
            "proposal_id": pid,
            "tool": proposal.tool,
            "status": state.status.value,
            "justification": proposal.payload.justification,
        }
        # Two kinds of proposal: a Dockerfile change, or an egress route.
        payload = proposal.payload
        if isinstance(payload, EgressRoutePayload):
            entry["host"] = payload.host
            entry["route"] = payload.route()
        else:
            entry["dockerfile"] = payload.dockerfile
        out.append(entry)
        if state.response is not None:
            r = state.response
            out.append(
                {
                    "timestamp": _ts(r.decided_at),
                    "daemon": "supervise",
                    "level": "info",
                    "event": "proposal answered",
                    "proposal_id": pid,
                    "decision": r.decision.value,
                    "comment": r.comment,
                    "edited": r.dockerfile is not None,
                }
            )
    return out


Positions = dict[str, tuple[int, int]]


def snapshot(history: BottleHistory) -> Positions:
    """Inode and size of each daemon's current file: where :func:`records`
    stops and :func:`follow` starts, so no line is lost or shown twice."""
    pos: Positions = {}
    for name in DAEMONS:
        with contextlib.suppress(OSError):
            st = (history.logs_dir / f"{name}.jsonl").stat()
            pos[name] = (st.st_ino, st.st_size)
    return pos


def records(
    history: BottleHistory, daemons: Iterable[str] | None = None, *, upto: Positions | None = None
) -> list[dict[str, Any]]:
    """Every kept record of the bottle (logs and proposals), oldest first;
    with ``upto``, current files only up to those sizes."""
    wanted = set(daemons) if daemons is not None else None
    out: list[dict[str, Any]] = []
    names = sorted({p.name.split(".jsonl", 1)[0] for p in history.logs_dir.glob("*.jsonl*")})
    for name in names:
        if wanted is not None and name not in wanted:
            continue
        for path in history.log_files(name):
            with contextlib.suppress(FileNotFoundError):
                data = path.read_bytes()
                if upto is not None and path.name == f"{name}.jsonl":
                    # Beyond the snapshot (or a file born after it) is follow's.
                    cap = upto.get(name)
                    same = cap is not None and path.stat().st_ino == cap[0]
                    data = data[: cap[1]] if same and cap is not None else b""
                for line in data.decode("utf-8", errors="replace").splitlines():
                    rec = _parse(line)
                    if rec is not None:
                        rec["timestamp"] = _ts(rec.get("timestamp"))
                        out.append(rec)
    if wanted is None or "supervise" in wanted:
        out.extend(proposal_records(history.queue_dir(), history.slug))
    out.sort(key=lambda r: str(r.get("timestamp", "")))
    return out


def follow(
    history: BottleHistory,
    daemons: Iterable[str] | None = None,
    *,
    interval: float = 0.5,
    stop: Any = None,
    start: Positions | None = None,
) -> Iterator[dict[str, Any]]:
    """New records as they are written, until the bottle ends (or ``stop()``).

    Polls: the files are written by another machine's root at times (a VM's
    bundle), where inotify sees nothing. Follows a rotation by the file's
    inode: the rest of the renamed file is read before the new one.
    """
    wanted = set(daemons) if daemons is not None else None
    pos = dict(start) if start is not None else snapshot(history)
    seen = {r.get("proposal_id", "") + str(r.get("event")) for r in _props(history, wanted)}
    ended_polls = 0
    while True:
        for name in DAEMONS:
            if wanted is not None and name not in wanted:
                continue
            yield from _read_new(history, name, pos)
        for rec in _props(history, wanted):
            key = rec.get("proposal_id", "") + str(rec.get("event"))
            if key not in seen:
                seen.add(key)
                yield rec
        if stop is not None and stop():
            return
        if history.ended or not history.running():
            # One more pass after the end: the last lines land just before it.
            ended_polls += 1
            if ended_polls > 1:
                return
        time.sleep(interval)


def _props(history: BottleHistory, wanted: set[str] | None) -> list[dict[str, Any]]:
    if wanted is not None and "supervise" not in wanted:
        return []
    return proposal_records(history.queue_dir(), history.slug)


def _read_new(
    history: BottleHistory, name: str, pos: dict[str, tuple[int, int]]
) -> Iterator[dict[str, Any]]:
    path = history.logs_dir / f"{name}.jsonl"
    try:
        st = path.stat()
    except OSError:
        return
    ino, offset = pos.get(name, (st.st_ino, 0))
    chunks: list[bytes] = []
    if ino != st.st_ino:
        # Rotated: finish the old file (now .1) first.
        old = history.logs_dir / f"{name}.jsonl.1"
        with contextlib.suppress(OSError):
            if old.stat().st_ino == ino:
                with old.open("rb") as fh:
                    fh.seek(offset)
                    chunks.append(fh.read())
        offset = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read()
    # Only complete lines; a partial one is read again next time.
    complete = data[: data.rfind(b"\n") + 1]
    chunks.append(complete)
    pos[name] = (st.st_ino, offset + len(complete))
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        rec = _parse(line)
        if rec is not None:
            rec["timestamp"] = _ts(rec.get("timestamp"))
            yield rec
