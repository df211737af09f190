"""Hook module: registers the ``kubernetes`` backend (cheap to import)."""

from __future__ import annotations

from typing import Any

from bot_bottle import Registration, hookimpl


def _backend() -> Any:
    from bot_bottle_kubernetes.backend import KubernetesBackend

    return KubernetesBackend()


@hookimpl
def bot_bottle_register_backends() -> list[Registration[Any]]:
    return [
        Registration(
            "kubernetes",
            _backend,
            "Kubernetes cluster: agent pod and sidecar pod, fenced by NetworkPolicy",
        )
    ]


def _freezer() -> Any:
    from bot_bottle_kubernetes.freezer import KubernetesFreezer

    return KubernetesFreezer()


@hookimpl
def bot_bottle_register_freezers() -> list[Registration[Any]]:
    return [
        Registration(
            "kubernetes",
            _freezer,
            "the agent pod's changes over pods/exec, a layer on its image, pushed by digest",
        )
    ]
