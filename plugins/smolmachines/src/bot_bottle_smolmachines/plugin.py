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


def _freezer() -> Any:
    from bot_bottle_smolmachines.freezer import SmolmachinesFreezer

    return SmolmachinesFreezer()


@hookimpl
def bot_bottle_register_freezers() -> list[Registration[Any]]:
    return [
        Registration(
            "smolmachines",
            _freezer,
            "the agent VM's filesystem, read in the guest, imported as a Docker image",
        )
    ]
