"""The deploy-key provisioner contract: a key made for one bottle, then revoked.

Static keys (a file on the host) are handled by core. A provisioner creates a
fresh key on a forge (e.g. a Gitea deploy key) at launch and revokes it at
teardown, so no credential outlives the bottle that used it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bot_bottle.contracts.common import PluginComponent

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot_bottle.secrets import Secret


@dataclass(frozen=True)
class KeyRequest:
    bottle_slug: str
    #: The git-gate repo name the key is for (validated ``[A-Za-z0-9._-]+``).
    repo_name: str
    #: Parsed upstream ``ssh://user@host:port/path``.
    host: str
    path: str
    #: The provisioner's own validated options from the manifest.
    options: BaseModel
    read_only: bool = False


@dataclass(frozen=True)
class ProvisionedKey:
    provisioner: str
    #: The forge's id for the key, needed to revoke it.
    key_id: str
    public_key: str
    private_key: Secret


class KeyProvisioner(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_key_provisioners``."""

    #: pydantic model of the options next to ``provider:`` in a git-gate
    #: repo's ``key:`` block; validated like a provider's ``options_model``.
    options_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def create(self, request: KeyRequest) -> ProvisionedKey:
        """Create and register a key. Raises
        :class:`~bot_bottle.errors.BotBottleError` on failure (nothing is left
        registered)."""

    @abstractmethod
    def revoke(self, key: ProvisionedKey) -> None:
        """Revoke ``key``. Raises :class:`~bot_bottle.errors.KeyRevocationError`
        when it cannot: never fail quietly."""
