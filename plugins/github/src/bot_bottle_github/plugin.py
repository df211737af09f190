"""Hook module: registers the ``github`` key provisioner (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _make() -> Any:
    from bot_bottle_github.provisioner import GitHubKeys

    return GitHubKeys()


@hookimpl
def bot_bottle_register_key_provisioners() -> list[Registration[Any]]:
    return [Registration("github", _make, "a GitHub deploy key per bottle, revoked at teardown")]
