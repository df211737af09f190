"""Hook module: registers the ``smolmachines`` backend (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _backend() -> Any:
    from bot_bottle_smolmachines.backend import SmolmachinesBackend

    return SmolmachinesBackend()


@hookimpl
def bot_bottle_register_backends() -> list[Registration[Any]]:
    return [
        Registration(
            "smolmachines", _backend, "libkrun micro-VM (smolvm CLI), sidecar bundle in Docker"
        )
    ]
