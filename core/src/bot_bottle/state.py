"""Per-bottle state on the host: ``~/.bot-bottle/state/<slug>/``.

``metadata.json`` (agent, backend, cwd, label, started_at, pid of the
launcher, ...) is written at launch. A clean end removes the directory; when
the agent exits non-zero a ``preserve`` marker keeps it for a later resume,
and ``cleanup`` leaves it alone. The directory also holds the bottle's
runtime files (``run/``: sidecar config, CA, sockets), removed with it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.paths import home_dir

METADATA = "metadata.json"
PRESERVE = "preserve"
#: Written by a backend whose cleanup of this bottle is not complete (a
#: working tree not given back): ``cleanup`` keeps the state dir and retries.
PENDING = "cleanup-pending"
#: A preserved bottle's last egress config (its routes), kept for resume.
ROUTES = "egress.json"
#: Where a backend renders the bottle's egress config under its run dir
#: (the sidecars read it at ``bot_bottle_sidecars.layout.EGRESS_CONFIG``).
LIVE_EGRESS_CONFIG = Path("etc", "egress", "egress.json")


def state_root(environ: Mapping[str, str] | None = None) -> Path:
    return home_dir(dict(environ) if environ is not None else None) / "state"


def home_id(root: Path | None = None) -> str:
    """A short stable id of this state root, for labelling a backend's
    resources: ``cleanup`` reaps only its own home's (another home's, or
    another user's, bottles are alive as far as it can tell)."""
    import hashlib

    base = (root or state_root()).expanduser().resolve()
    return hashlib.sha256(str(base).encode()).hexdigest()[:16]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import socket

        return socket.gethostname()


def launcher_id(pid: int | None = None) -> str:
    """``<boot id>:<pid>`` of the launching process."""
    return f"{_boot_id()}:{pid if pid is not None else os.getpid()}"


def launcher_gone(label: str) -> bool:
    """True only when ``label`` names a process of this boot that has exited;
    a process on another boot or machine cannot be judged, so it is not."""
    boot, _, pid = label.rpartition(":")
    return boot == _boot_id() and pid.isdigit() and not pid_alive(int(pid))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def state_write_error(path: Path, exc: OSError) -> BotBottleError:
    """A clear error for a state write that failed (a full disk, mostly)."""
    import errno

    reason = exc.strerror or str(exc)
    root = state_root()
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BotBottleError(
            f"no space left for bot-bottle's state: cannot write {path} ({reason})",
            hint=f"free space on the filesystem holding {root} (see 'df -h {root}'), "
            "then run again; nothing was started",
        )
    return BotBottleError(
        f"cannot write bot-bottle's state {path}: {reason}",
        hint="check the permissions of BOT_BOTTLE_HOME (default ~/.bot-bottle)",
    )


@dataclass(frozen=True)
class StateDir:
    path: Path

    @classmethod
    def for_slug(cls, slug: str, root: Path | None = None) -> StateDir:
        return cls((root or state_root()) / slug)

    @property
    def slug(self) -> str:
        return self.path.name

    @property
    def run_dir(self) -> Path:
        return self.path / "run"

    def create(self, metadata: Mapping[str, Any]) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=False, mode=0o700)
        except OSError as exc:
            if isinstance(exc, FileExistsError):
                raise
            raise state_write_error(self.path, exc) from None
        try:
            self.write_metadata(metadata)
        except BaseException:
            # No state dir without its metadata: it would claim a bottle
            # that never started.
            shutil.rmtree(self.path, ignore_errors=True)
            raise

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Replace ``metadata.json`` atomically (written whole, fsynced, renamed)."""
        tmp = self.path / (METADATA + ".tmp")
        data = (json.dumps(dict(metadata), indent=2, sort_keys=True) + "\n").encode()
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path / METADATA)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise state_write_error(self.path / METADATA, exc) from None

    def metadata(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / METADATA).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def preserve(self, reason: str) -> None:
        (self.path / PRESERVE).write_text(reason + "\n")
        # The runtime files (CA key, staged config) are not needed for a resume.
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def keep_routes(self) -> None:
        """Copy the egress config live now (routes the console changed
        included; no secret in it) out of ``run/``, which the launch's
        teardown removes: a resume of a preserved bottle restores them."""
        routes = self.run_dir / LIVE_EGRESS_CONFIG
        if routes.is_file():
            shutil.copyfile(routes, self.path / ROUTES)

    @property
    def preserved(self) -> bool:
        return (self.path / PRESERVE).exists()

    @property
    def pending(self) -> str:
        """Why a backend asked ``cleanup`` to keep this state dir ("" if it did not)."""
        try:
            return (self.path / PENDING).read_text().strip()
        except OSError:
            return ""

    @property
    def owner_alive(self) -> bool:
        pid = self.metadata().get("pid")
        return isinstance(pid, int) and pid_alive(pid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def all_states(root: Path | None = None) -> list[StateDir]:
    base = root or state_root()
    try:
        return [StateDir(p) for p in sorted(base.iterdir()) if p.is_dir()]
    except OSError:
        return []
