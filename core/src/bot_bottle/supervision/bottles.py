"""The bottles of this home, read from their state dirs and supervise queues.

Reading files only (no backend call), so the console can refresh this on
every change it is told about without touching the Docker engine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot_bottle.contracts.supervise import SLUG_RE, SuperviseQueue
from bot_bottle.paths import home_dir
from bot_bottle.state import StateDir, all_states, state_root

#: Colours a bottle is shown in (stable per slug), readable on dark and light.
PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


@dataclass(frozen=True)
class BottleInfo:
    slug: str
    agent: str
    label: str | None
    provider: str
    backend: str
    started_at: datetime | None
    running: bool
    queue_dir: Path
    state_dir: Path

    @property
    def colour(self) -> str:
        digest = hashlib.sha256(self.slug.encode()).digest()
        return PALETTE[digest[0] % len(PALETTE)]

    def uptime(self, now: datetime | None = None) -> str:
        if self.started_at is None:
            return "-"
        seconds = int(((now or datetime.now(UTC)) - self.started_at).total_seconds())
        if seconds < 0:
            return "-"
        h, rem = divmod(seconds, 3600)
        m, s = divmod(rem, 60)
        return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"

    def queue(self) -> SuperviseQueue:
        return SuperviseQueue(self.queue_dir, self.slug)

    def pending(self) -> int:
        try:
            return len(self.queue().pending())
        except Exception:
            # One broken queue file must not hide the bottle; the proposal
            # list reports it.
            return 0

    def as_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "agent": self.agent,
            "label": self.label,
            "provider": self.provider,
            "backend": self.backend,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "running": self.running,
            "pending": self.pending(),
        }


def queues_root(home: Path | None = None) -> Path:
    return (home or home_dir()) / "supervise"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def list_bottles(home: Path | None = None) -> list[BottleInfo]:
    """Every bottle with a state dir or a supervise queue, running first."""
    root = state_root() if home is None else home / "state"
    qroot = queues_root(home)
    by_slug: dict[str, BottleInfo] = {}
    for state in all_states(root):
        if not SLUG_RE.fullmatch(state.slug):
            continue
        meta = state.metadata()
        by_slug[state.slug] = BottleInfo(
            slug=state.slug,
            agent=str(meta.get("agent") or "?"),
            label=meta.get("label") if isinstance(meta.get("label"), str) else None,
            provider=str(meta.get("provider") or "?"),
            backend=str(meta.get("backend") or "?"),
            started_at=_parse_time(meta.get("started_at")),
            running=not state.preserved and state.owner_alive,
            queue_dir=qroot / state.slug,
            state_dir=state.path,
        )
    try:
        queue_dirs = sorted(p for p in qroot.iterdir() if p.is_dir())
    except OSError:
        queue_dirs = []
    for qdir in queue_dirs:
        if qdir.name in by_slug or not SLUG_RE.fullmatch(qdir.name):
            continue
        by_slug[qdir.name] = BottleInfo(
            slug=qdir.name, agent="?", label=None, provider="?", backend="?",
            started_at=None, running=False, queue_dir=qdir,
            state_dir=StateDir.for_slug(qdir.name, root).path,
        )  # fmt: skip
    return sorted(by_slug.values(), key=lambda b: (not b.running, b.slug))


def find_bottle(slug: str, home: Path | None = None) -> BottleInfo | None:
    return next((b for b in list_bottles(home) if b.slug == slug), None)
