"""The freezer contract: commit a bottle's agent so it can be resumed.

Core decides *what* a snapshot may hold and keeps the records
(:mod:`bot_bottle.snapshots`); a freezer knows how its backend turns an
agent's filesystem into something a later launch boots from. Every freezer
must:

* leave out :data:`EXCLUDED` (scratch space; uid remaps break tools on
  resume) and anything the launch put there that resume replaces (the
  bottle CA certificate at ``ca_cert_path`` and its copy appended to the
  system CA bundles: a resumed bottle trusts its own, new CA only);
* keep the launch's secrets out: the agent's container environment (it
  holds the bottle's env values, some of them prompted or host secrets) is
  not frozen; the image's own environment is;
* hand every regular file the bottle added or changed to ``scan`` *before*
  anything is created, and create nothing when a scan names a finding
  (:class:`SnapshotRefused`, naming the paths).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot_bottle.contracts.common import PluginComponent
from bot_bottle.errors import BotBottleError

if TYPE_CHECKING:
    from bot_bottle.secrets import Secret

#: Directories whose whole content stays out of every snapshot.
EXCLUDED: tuple[str, ...] = ("/tmp", "/var/tmp")  # noqa: S108 - guest paths, excluded

#: ``scan(path, chunks)`` -> descriptions of findings (empty: clean). The
#: chunks are the file's content, read once.
FileScan = Callable[[str, Iterable[bytes]], list[str]]


@dataclass(frozen=True)
class FrozenImage:
    backend: str
    #: Backend-specific reference a later launch boots from (image id, path).
    ref: str
    created_at: str


class SnapshotRefused(BotBottleError):
    """A scan found secrets in what a commit would have frozen; nothing was created."""

    def __init__(self, findings: Mapping[str, Sequence[str]]) -> None:
        from bot_bottle.termtext import visible

        self.findings = {path: list(found) for path, found in findings.items()}
        # The paths are the agent's choice: shown, never interpreted by the terminal.
        paths = ", ".join(visible(p, limit=200) for p in sorted(self.findings))
        super().__init__(
            f"refusing to commit: secrets found in {paths}",
            hint="remove those files in the bottle (or their secret content), then commit again",
        )


class Freezer(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_freezers``.

    ``name`` equals the name of the backend whose bottles it freezes.
    """

    @abstractmethod
    def commit(
        self,
        slug: str,
        *,
        ref: str,
        scan: FileScan,
        ca_cert_path: str,
        labels: Mapping[str, str] | None = None,
    ) -> FrozenImage:
        """Snapshot the agent of bottle ``slug`` (running, or kept stopped
        after a non-zero exit) into ``ref``. A running bottle keeps running.
        Raises :class:`SnapshotRefused` when ``scan`` finds anything."""

    @abstractmethod
    def bottle_secrets(self, slug: str) -> list[Secret]:
        """The secret values the bottle's sidecars hold (injected tokens and
        the bottle's known secrets), for the scan; empty once they are gone."""

    @abstractmethod
    def exists(self, image: FrozenImage) -> bool:
        """True while the frozen image can still be booted from."""

    @abstractmethod
    def in_use(self, image: FrozenImage) -> list[str]:
        """Slugs of the bottles (running or kept) whose agent boots from ``image``."""

    @abstractmethod
    def frozen_refs(self) -> list[str]:
        """Refs of every frozen image this home created (for ``cleanup``:
        those no snapshot record names are dangling)."""

    @abstractmethod
    def release(self, slug: str) -> None:
        """Remove what a kept (preserved) bottle still holds once it is committed."""

    @abstractmethod
    def remove(self, image: FrozenImage) -> None:
        """Delete a frozen image that is no longer wanted."""

    def derive(
        self,
        ref: str,
        recipe: Callable[[str], str],
        *,
        repository: str,
        extra_ca: Path | None,
        progress: Callable[[str], None],
    ) -> str:
        """Build (or reuse: content-tagged) an image from frozen image ``ref``
        and return its ref. ``recipe(user)`` is the build file (Dockerfile
        syntax, ``FROM ${BASE_IMAGE}``) given the ``USER`` ``ref`` runs as;
        resume uses it to apply approved capability blocks. A freezer that
        cannot build says so (the default)."""
        raise BotBottleError(
            f"the {self.name} freezer cannot apply capability blocks to a snapshot",
            hint="resume the snapshot without them, or use a backend that builds images",
        )
