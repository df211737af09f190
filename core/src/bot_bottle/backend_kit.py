"""What every backend's running bottle does the same way, whatever its engine.

:class:`BottleBase` holds the parts of a :class:`RunningBottle` no engine
changes: the launch's phase timings, the once-only wait for the sidecars,
``keep_for_resume``'s flag. :func:`copy_in_tar` and :func:`unpack_copy_out`
are the two ends of moving a file or directory as a tar stream, for engines
whose copy goes through an archive (Docker's ``put_archive``/``get_archive``,
Apple's ``container exec … tar``). :func:`bottle_labels` is the set of
labels every backend puts on a bottle's containers, VMs and networks;
:func:`begin_history` starts the record every launch keeps of its bottle.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from bot_bottle.contracts.backend import BottlePlan, ExecResult, RunningBottle
from bot_bottle.errors import BotBottleError
from bot_bottle.state import home_id, launcher_id

if TYPE_CHECKING:
    from bot_bottle.history import BottleHistory

L_SLUG = "bot-bottle.slug"
L_AGENT = "bot-bottle.agent"
L_BACKEND = "bot-bottle.backend"
L_ROLE = "bot-bottle.role"
L_LABEL = "bot-bottle.label"
L_STARTED = "bot-bottle.started"
L_SERVICES = "bot-bottle.services"
L_HOME = "bot-bottle.home"
L_LAUNCHER = "bot-bottle.launcher"


def bottle_labels(plan: BottlePlan, backend: str, services: Iterable[str]) -> dict[str, str]:
    """The labels that find a bottle's objects again: ``list active`` reads
    slug, agent, label and services; ``cleanup`` keeps to this home's
    (``L_HOME``) and tells an orphan by its gone launcher (``L_LAUNCHER``)."""
    return {
        L_SLUG: plan.slug,
        L_AGENT: plan.agent,
        L_BACKEND: backend,
        L_LABEL: plan.label or "",
        L_SERVICES: ",".join(services),
        L_HOME: home_id(),
        L_LAUNCHER: launcher_id(),
    }


def begin_history(plan: BottlePlan, backend: str) -> tuple[BottleHistory, Path]:
    """The bottle's history, begun (its logs and proposals outlive the
    bottle: ``bot-bottle logs``, cleanup's retention), and the host's
    supervise queue (where ``SuperviseQueue`` looks). The launch ends the
    history with ``history.end(queue)`` at teardown."""
    from bot_bottle.contracts.supervise_paths import default_queue_dir
    from bot_bottle.history import BottleHistory

    queue = default_queue_dir(plan.slug)
    history = BottleHistory.for_slug(plan.slug)
    history.begin(
        {"slug": plan.slug, "agent": plan.agent, "bottle": plan.bottle,
         "backend": backend, "label": plan.label}
    )  # fmt: skip
    return history, queue


class BottleBase(RunningBottle):
    """Timings, the sidecars' readiness wait (once) and the kept flag."""

    def __init__(
        self,
        slug: str,
        *,
        wait_ready: Callable[[], None] | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        self.slug = slug
        self._wait_ready = wait_ready
        #: phase -> seconds, for the preflight summary and bench/.
        self._timings = timings if timings is not None else {}
        #: Set by keep_for_resume: the launch's teardown stops the agent
        #: instead of removing it (for backends that can keep one).
        self.kept = False

    @property
    def timings(self) -> Mapping[str, float]:
        return self._timings

    def keep_for_resume(self) -> None:
        self.kept = True

    def wait_ready(self) -> None:
        """Block until the sidecars answer the agent (once).

        Provisioning runs while they boot; ``attach``/``run`` wait first.
        """
        if self._wait_ready is not None:
            t = time.monotonic()
            wait, self._wait_ready = self._wait_ready, None
            wait()
            self._timings["sidecars_ready"] = time.monotonic() - t

    @staticmethod
    def _check(result: ExecResult, what: str) -> None:
        if not result.ok:
            raise BotBottleError(f"{what} failed in the bottle: {result.stderr[-300:]!r}")


def copy_in_tar(src: Path, dest: str, mode: int | None) -> tuple[bytes, bool]:
    """A tar holding ``src`` named as ``dest``'s last part, to unpack in
    ``dest``'s parent. One file goes in root-owned with ``mode`` set in the
    archive (an exec round trip saved per attribute); returns the archive and
    whether ``mode`` is applied by it (a directory's is not)."""
    target = PurePosixPath(dest)
    buf = io.BytesIO()
    applied = False
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if src.is_file():
            info = tar.gettarinfo(str(src), arcname=target.name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if mode is not None:
                info.mode = mode
                applied = True
            with src.open("rb") as fh:
                tar.addfile(info, fh)
        else:
            tar.add(str(src), arcname=target.name)
    return buf.getvalue(), applied


def unpack_copy_out(data: bytes, src: str, dest: Path) -> None:
    """Write the first member of tar ``data`` (``src`` in the bottle) to
    ``dest``: a directory is extracted (``data`` filter: nothing lands
    outside ``dest``'s parent), a regular file written."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        if not members:
            raise BotBottleError(f"{src} came out of the bottle empty")
        member = members[0]
        if member.isdir():
            tar.extractall(dest.parent, filter="data")
            extracted = dest.parent / member.name
            if extracted != dest:
                extracted.rename(dest)
            return
        fh = tar.extractfile(member)
        if fh is None:
            raise BotBottleError(f"{src} is not a regular file")
        dest.write_bytes(fh.read())
