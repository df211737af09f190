"""The Kubernetes backend: two pods per bottle, fenced by NetworkPolicy.

``prepare`` renders the bottle's objects (:mod:`bot_bottle_kubernetes.render`)
and needs no cluster: ``start --dry-run --json`` prints them. The cluster side
(creating them, the fence probe, exec, cleanup by labels) talks to the API
server through the official ``kubernetes`` client, imported lazily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from bot_bottle.contracts.backend import (
    ActiveBottle,
    Backend,
    BottlePlan,
    CleanupItem,
    PreparedBottle,
    RunningBottle,
)
from bot_bottle.contracts.common import Availability
from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes.prepared import KubernetesPrepared, prepare
from bot_bottle_kubernetes.render import BACKEND


class KubernetesBackend(Backend):
    name = BACKEND
    description = "Kubernetes cluster: agent pod and sidecar pod, fenced by NetworkPolicy"

    def is_available(self) -> Availability:
        return Availability.no(
            "the kubernetes backend cannot launch yet (rendering only)",
            "'bot-bottle start AGENT --backend kubernetes --dry-run --json' shows the objects",
        )

    def prepare(self, plan: BottlePlan) -> KubernetesPrepared:
        return prepare(plan, self.name)

    @contextlib.contextmanager
    def launch(self, prepared: PreparedBottle) -> Iterator[RunningBottle]:
        raise BotBottleError(
            "the kubernetes backend cannot launch yet (rendering only)",
            hint="'bot-bottle start AGENT --backend kubernetes --dry-run --json' shows the objects",
        )
        yield  # pragma: no cover - unreachable; makes this a generator

    def list_active(self) -> list[ActiveBottle]:
        return []

    def find_orphans(self) -> list[CleanupItem]:
        return []

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        return []
