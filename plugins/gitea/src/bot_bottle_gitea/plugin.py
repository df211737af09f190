"""Hook module: registers the ``gitea`` key provisioner (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _make() -> Any:
    from bot_bottle_gitea.provisioner import GiteaKeys

    return GiteaKeys()


@hookimpl
def bot_bottle_register_key_provisioners() -> list[Registration[Any]]:
    return [
        Registration("gitea", _make, "a Gitea/Forgejo deploy key per bottle, revoked at teardown")
    ]
