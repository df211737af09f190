"""The freezer contract: commit a running bottle so it can be resumed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot_bottle.contracts.common import PluginComponent

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import RunningBottle


@dataclass(frozen=True)
class FrozenImage:
    backend: str
    #: Backend-specific reference a later launch boots from (image id, path).
    ref: str
    created_at: str


class Freezer(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_freezers``.

    ``name`` equals the name of the backend whose bottles it freezes.
    """

    @abstractmethod
    def commit(self, bottle: RunningBottle, *, ref: str) -> FrozenImage:
        """Snapshot the agent's filesystem (excluding ``/tmp`` and ``/var/tmp``)
        into ``ref``; the bottle keeps running."""

    @abstractmethod
    def remove(self, image: FrozenImage) -> None:
        """Delete a frozen image that is no longer wanted."""
