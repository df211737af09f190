"""The deploy-key provisioner contract: a key made for one bottle, then revoked.

Static keys (a file on the host) are handled by core. A provisioner creates a
fresh key on a forge (e.g. a Gitea deploy key) at launch and revokes it at
teardown, so no credential outlives the bottle that used it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
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
    #: ``create`` calls this with the forge's id of the new key as soon as the
    #: forge answers, before anything else: core records the id in the
    #: bottle's state dir, so a launcher killed at that moment still leaves a
    #: record ``bot-bottle cleanup`` revokes.
    on_created: Callable[[str], None] = field(default=lambda _id: None, compare=False)

    @property
    def title(self) -> str:
        """The key's title on the forge: names the bottle and the repo, so an
        operator (and :meth:`KeyProvisioner.find_keys`) can tell whose it is."""
        prefix = getattr(self.options, "title_prefix", None) or "bot-bottle"
        return f"{prefix}:{self.bottle_slug}:{self.repo_name}"


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
        """Create and register a key titled ``request.title``; call
        ``request.on_created(key_id)`` the moment the forge returns the id.
        Raises :class:`~bot_bottle.errors.BotBottleError` on failure (nothing is
        left registered). Never put the API token in a message or log."""

    @abstractmethod
    def revoke(self, request: KeyRequest, key_id: str) -> None:
        """Revoke the key ``key_id`` created for ``request``. A key the forge no
        longer has counts as revoked. Raises
        :class:`~bot_bottle.errors.KeyRevocationError` when it cannot: never
        fail quietly. ``request`` is rebuilt from the state dir by ``cleanup``
        (its ``options`` re-validated), so it must be all this needs."""

    def find_keys(self, request: KeyRequest) -> list[str]:
        """Ids of the keys on the forge titled ``request.title``: what
        ``cleanup`` revokes when a launcher died after asking the forge for a
        key but before the id came back. The default finds none."""
        return []
