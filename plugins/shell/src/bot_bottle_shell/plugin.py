"""Hook module: registers the ``shell`` agent provider (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _make() -> Any:
    from bot_bottle_shell.provider import ShellProvider

    return ShellProvider()


@hookimpl
def bot_bottle_register_agent_providers() -> list[Registration[Any]]:
    return [Registration("shell", _make, "a shell with curl, git and DNS tools; no credentials")]
