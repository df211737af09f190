"""Hook module: registers the ``apple_container`` backend (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _backend() -> Any:
    from bot_bottle_apple_container.backend import AppleContainerBackend

    return AppleContainerBackend()


@hookimpl
def bot_bottle_register_backends() -> list[Registration[Any]]:
    return [
        Registration(
            "apple_container",
            _backend,
            "Apple container CLI (macOS 26+): agent VM on a host-only network, sidecar bundle",
        )
    ]
