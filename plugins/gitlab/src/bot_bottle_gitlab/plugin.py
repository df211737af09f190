"""Hook module: registers the ``gitlab`` key provisioner (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _make() -> Any:
    from bot_bottle_gitlab.provisioner import GitLabKeys

    return GitLabKeys()


@hookimpl
def bot_bottle_register_key_provisioners() -> list[Registration[Any]]:
    return [Registration("gitlab", _make, "a GitLab deploy key per bottle, revoked at teardown")]
