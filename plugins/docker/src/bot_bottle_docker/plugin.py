"""Hook module: registers the ``docker`` backend and freezer (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _backend() -> Any:
    from bot_bottle_docker.backend import DockerBackend

    return DockerBackend()


def _freezer() -> Any:
    from bot_bottle_docker.freezer import DockerFreezer

    return DockerFreezer()


@hookimpl
def bot_bottle_register_backends() -> list[Registration[Any]]:
    return [
        Registration("docker", _backend, "Docker engine: agent with no network, sidecar bundle")
    ]


@hookimpl
def bot_bottle_register_freezers() -> list[Registration[Any]]:
    return [Registration("docker", _freezer, "docker commit of the agent container")]
