"""Error types. Each says what happened and, in ``hint``, what to do about it.

The CLI catches :class:`BotBottleError` at its boundary and prints
``error: <message>`` plus the hint, never a traceback.
"""

from __future__ import annotations


class BotBottleError(Exception):
    """Base of every error bot-bottle reports to a user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class PluginError(BotBottleError):
    """A plugin could not be loaded, registered or used."""


class PluginConflictError(PluginError):
    """Two plugins registered the same name in one family."""


class UnknownPluginError(PluginError):
    """A name was asked for that no installed plugin provides."""


class KeyRevocationError(BotBottleError):
    """A provisioned deploy key could not be revoked.

    Raised loudly: a key that outlives its bottle is a credential leak the
    operator has to clean up by hand, so teardown reports it and keeps a
    record that ``cleanup`` retries.
    """
