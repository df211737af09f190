"""bot-bottle: run coding agents in bottles they cannot modify.

Plugins import the hook marker from here::

    from bot_bottle import hookimpl

    @hookimpl
    def bot_bottle_register_dlp_detectors():
        ...

The package stays import-light on purpose: ``bot-bottle --help`` must not pay
for pluggy, pydantic or any plugin, so the public names below load on first
use (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["PROJECT_NAME", "Registration", "__version__", "hookimpl"]

#: The pluggy project name; also the entry-point group plugins register under.
PROJECT_NAME = "bot_bottle"

if TYPE_CHECKING:
    from bot_bottle.hookspecs import Registration, hookimpl


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        from bot_bottle.hookspecs import hookimpl

        return hookimpl
    if name == "Registration":
        from bot_bottle.hookspecs import Registration

        return Registration
    raise AttributeError(f"module 'bot_bottle' has no attribute {name!r}")
