"""What ``prepare`` computes for a cluster bottle: the operator's options and
the rendered objects a dry run shows. PURE (reads the environment only)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from bot_bottle.contracts.backend import BottlePlan, PreparedBottle
from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes.render import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_POD_CIDRS,
    DEFAULT_SERVICE_CIDRS,
    WORKSPACE,
    SeccompMode,
    names,
    render_bottle,
    render_namespace,
)

#: The RuntimeClass a gVisor cluster registers for runsc (GKE Sandbox and
#: gVisor's own docs name it so); used only when the cluster has it.
GVISOR_RUNTIME_CLASS = "gvisor"
DEFAULT_NAMESPACE = "bot-bottle"
ENV_PREFIX = "BOT_BOTTLE_K8S_"


def _cidrs(name: str, raw: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise BotBottleError(
                f"{ENV_PREFIX}{name}: {part!r} is not a CIDR range",
                hint="a comma-separated list such as 10.244.0.0/16,fd00:10:244::/56",
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class KubeOptions:
    """The operator's choices for cluster bottles (``BOT_BOTTLE_K8S_*``)."""

    namespace: str = DEFAULT_NAMESPACE
    #: The RuntimeClass asked for (gVisor unless ``--no-gvisor``); launch
    #: uses it only when the cluster serves it.
    runtime_class: str | None = GVISOR_RUNTIME_CLASS
    #: ``hostUsers: false`` (a user namespace per pod) when True.
    user_namespace: bool = False
    seccomp: SeccompMode = "localhost"
    pod_cidrs: tuple[str, ...] = DEFAULT_POD_CIDRS
    service_cidrs: tuple[str, ...] = DEFAULT_SERVICE_CIDRS
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    #: Registry the images are pushed to for the nodes (None: the nodes
    #: already have them, e.g. ``kind load``).
    registry: str | None = None

    @classmethod
    def from_plan(cls, plan: BottlePlan, environ: Mapping[str, str] | None = None) -> KubeOptions:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        namespace = get("NAMESPACE") or DEFAULT_NAMESPACE
        if not _dns_label(namespace):
            raise BotBottleError(
                f"{ENV_PREFIX}NAMESPACE: {namespace!r} is not a namespace name",
                hint="lower-case letters, digits and '-', at most 63",
            )
        runtime_class = get("RUNTIME_CLASS") or GVISOR_RUNTIME_CLASS
        if not plan.backend_options.get("gvisor", True):
            runtime_class = None
        seccomp = get("SECCOMP") or "localhost"
        if seccomp not in ("localhost", "runtime-default"):
            raise BotBottleError(
                f"{ENV_PREFIX}SECCOMP: {seccomp!r} is neither localhost nor runtime-default",
                hint="localhost needs the profile on every node (plugins/kubernetes/README.md)",
            )
        userns = get("USER_NAMESPACE") or "false"
        if userns not in ("true", "false"):
            raise BotBottleError(f"{ENV_PREFIX}USER_NAMESPACE: {userns!r} is not true or false")
        deadline = get("DEADLINE_SECONDS") or str(DEFAULT_DEADLINE_SECONDS)
        if not deadline.isdigit() or int(deadline) < 60:
            raise BotBottleError(
                f"{ENV_PREFIX}DEADLINE_SECONDS: {deadline!r} is not a number of seconds >= 60"
            )
        pods = get("POD_CIDRS")
        services = get("SERVICE_CIDRS")
        return cls(
            namespace=namespace,
            runtime_class=runtime_class,
            user_namespace=userns == "true",
            seccomp=cast(SeccompMode, seccomp),
            pod_cidrs=_cidrs("POD_CIDRS", pods) if pods else DEFAULT_POD_CIDRS,
            service_cidrs=_cidrs("SERVICE_CIDRS", services) if services else DEFAULT_SERVICE_CIDRS,
            deadline_seconds=int(deadline),
            registry=get("REGISTRY"),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "runtime_class": (
                f"{self.runtime_class} (when the cluster has it)" if self.runtime_class else None
            ),
            "user_namespace": self.user_namespace,
            "seccomp": self.seccomp,
            "pod_cidrs": list(self.pod_cidrs),
            "service_cidrs": list(self.service_cidrs),
            "deadline_seconds": self.deadline_seconds,
            "registry": self.registry,
        }


def _dns_label(name: str) -> bool:
    import re

    return re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name) is not None


@dataclass(frozen=True)
class KubernetesPrepared(PreparedBottle):
    options: KubeOptions = field(default_factory=KubeOptions)
    #: role -> object name (``render.names``).
    names: Mapping[str, str] = field(default_factory=dict)
    #: The objects as a dry run shows them: secret values hidden, the
    #: images, the anchor's uid and the bundle's address not known yet.
    objects: tuple[dict[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            **self.options.describe(),
            "pods": [self.names["sidecars"], self.names["agent"]],
            "agent_network": (
                "pod network fenced by NetworkPolicy: egress only to its bundle pod's relay "
                "ports, no ingress, no DNS"
            ),
            "workdir": self.workdir,
            "objects": list(self.objects),
        }


def prepare(plan: BottlePlan, backend: str) -> KubernetesPrepared:
    options = KubeOptions.from_plan(plan)
    images = {
        "agent": plan.agent_image or "(agent image: built and pushed at launch)",
        "bundle": plan.bundle_image or "(sidecar image: built and pushed at launch)",
    }
    objects = [
        *render_namespace(options.namespace),
        *render_bottle(
            plan,
            namespace=options.namespace,
            images=images,
            reveal=False,
            runtime_class=options.runtime_class,
            host_users=False if options.user_namespace else None,
            seccomp=options.seccomp,
            pod_cidrs=options.pod_cidrs,
            service_cidrs=options.service_cidrs,
            deadline_seconds=options.deadline_seconds,
        ),
    ]
    return KubernetesPrepared(
        plan=plan,
        backend=backend,
        workdir=WORKSPACE if plan.cwd is not None else plan.provider_plan.guest_home,
        options=options,
        names=names(plan.slug),
        objects=tuple(objects),
    )
