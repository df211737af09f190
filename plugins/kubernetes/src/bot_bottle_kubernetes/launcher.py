"""Launching a rendered bottle on a cluster, and the running bottle (exec-based).

The order, each step undone on any failure (also Ctrl-C):

1. refuse when another NetworkPolicy selects the bottle's pods (policies
   are additive: it could open the fence);
2. the namespace's default deny (shared, created once, never removed);
3. the anchor, then everything it owns except the agent pod (the Lease
   first after the anchor, renewed from then on; policies before pods);
4. the bundle pod Running and Ready: its IP is where the agent's relay
   points, so the agent pod is rendered again with it and created last;
5. the fence probe from the agent pod (fails closed, :mod:`.fence`).

Teardown deletes the anchor with ``propagationPolicy: Foreground`` and
sweeps whatever still carries the bottle's label.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot_bottle.contracts.backend import ExecResult, RunningBottle
from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes import fence, interactive, transfer
from bot_bottle_kubernetes.cluster import ApiFailure, Kube, KubeError, wait_for_pods
from bot_bottle_kubernetes.lifecycle import (
    LABEL_ROLE,
    BottleObjects,
    foreign_policies,
)

log = logging.getLogger(__name__)

AGENT_CONTAINER = "agent"
#: Render's placeholders before the anchor and the bundle pod exist.
Render = Callable[[str, str], list[dict[str, Any]]]


def _role(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLE)


def _pod(objects: Sequence[Mapping[str, Any]], role: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == "Pod" and _role(obj) == role:
            return dict(obj)
    raise KubeError(f"the rendered bottle has no {role} pod")


def ensure_namespace_objects(kube: Kube, objects: Sequence[Mapping[str, Any]]) -> None:
    """Create the namespace's shared objects (the default deny) unless present."""
    for obj in objects:
        try:
            kube.create(obj)
        except ApiFailure as e:
            if e.status == 409:
                continue
            if e.status == 404 and "namespace" in str(e).lower():
                raise KubeError(
                    f"namespace {kube.namespace} does not exist",
                    hint=f"create it (`kubectl create namespace {kube.namespace}`) "
                    "or set BOT_BOTTLE_K8S_NAMESPACE to one you may use",
                ) from None
            raise


def api_service_ip(kube: Kube, service_cidrs: Sequence[str]) -> str | None:
    """The ``kubernetes`` service's IP; its CIDR's first address when unreadable."""
    try:
        svc = kube.get("Service", "kubernetes", namespace="default")
    except KubeError:
        svc = None
    ip = ((svc or {}).get("spec") or {}).get("clusterIP")
    if ip:
        return str(ip)
    for cidr in service_cidrs:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version == 4:
            return str(net.network_address + 1)
    return None


@contextmanager
def launch_bottle(
    kube: Kube,
    *,
    slug: str,
    render: Render,
    namespace_objects: Sequence[Mapping[str, Any]] = (),
    service_cidrs: Sequence[str] = (),
    public_target: tuple[str, int] = fence.DEFAULT_PUBLIC,
    pod_timeout: float = 300.0,
    user: str = "root",
    workdir: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[KubeRunningBottle]:
    from bot_bottle_kubernetes.render import PENDING_ADDRESS, PENDING_UID

    first = render(PENDING_UID, PENDING_ADDRESS)
    agent_name = str(_pod(first, "agent")["metadata"]["name"])
    bundle_name = str(_pod(first, "sidecars")["metadata"]["name"])
    pod_labels = [o["metadata"]["labels"] for o in first if o["kind"] == "Pod"]
    others = foreign_policies(kube.list("NetworkPolicy"), pod_labels, slug)
    if others:
        raise KubeError(
            f"NetworkPolicies not made by this bottle select its pods: {', '.join(others)}",
            hint="NetworkPolicies add up, so these could open the bottle's fence; run bottles "
            "in a namespace of their own (BOT_BOTTLE_K8S_NAMESPACE)",
        )
    ensure_namespace_objects(kube, namespace_objects)
    objects = BottleObjects(kube, slug)
    try:
        objects.create_anchor(first[0])
        for obj in first[1:]:
            if obj["kind"] == "Pod" and _role(obj) == "agent":
                continue
            progress(f"create {obj['kind']}/{obj['metadata']['name']}")
            objects.create_owned(obj)
            if obj["kind"] == "Lease":
                objects.start_renewing()
        bundle = wait_for_pods(kube, [bundle_name], timeout=pod_timeout)[bundle_name]
        bundle_ip = (bundle.get("status") or {}).get("podIP")
        if not bundle_ip:
            raise KubeError(f"pod {bundle_name} is running without an IP")
        assert objects.anchor is not None
        final = render(str(objects.anchor["metadata"]["uid"]), str(bundle_ip))
        agent_obj = _pod(final, "agent")
        progress(f"create Pod/{agent_name}")
        objects.create_owned(agent_obj)
        agent = wait_for_pods(kube, [agent_name], timeout=pod_timeout)[agent_name]

        bottle = KubeRunningBottle(slug, kube, agent_name, user=user, workdir=workdir)
        ports = fence.bundle_ports(
            [o for o in final if o["kind"] == "NetworkPolicy"], agent_obj["metadata"]["labels"]
        )
        targets = fence.targets(
            api_service_ip=api_service_ip(kube, service_cidrs),
            node_ip=(agent.get("status") or {}).get("hostIP"),
            bundle_ip=str(bundle_ip),
            bundle_ports=ports,
            public=public_target,
        )
        progress("fence probe")
        fence.require_fenced(fence.run_probe(lambda argv: bottle.exec(argv, user="root"), targets))
        yield bottle
    finally:
        failures = objects.teardown()
        if failures:
            log.warning("bottle %s: teardown left %s", slug, "; ".join(failures))


class KubeRunningBottle(RunningBottle):
    """The agent pod, reached through ``pods/exec`` only."""

    def __init__(
        self, slug: str, kube: Kube, pod: str, *, user: str, workdir: str | None = None
    ) -> None:
        self.slug = slug
        self.kube = kube
        self.pod = pod
        self.user = user
        self.workdir = workdir

    def command(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> list[str]:
        """``argv`` as the container runs it: exec has no user, env or cwd
        options, so ``runuser`` and ``env`` (both in every Debian image)
        supply them. Never a shell string."""
        if not argv:
            raise BotBottleError("exec needs a command")
        out: list[str] = []
        who = user or self.user
        if who not in ("root", "0"):
            out += ["runuser", "-u", who, "--"]
        cwd = workdir or None
        if env or cwd:
            out.append("env")
            if cwd:
                out += ["-C", cwd]
            for key, value in (env or {}).items():
                if "=" in key or not key:
                    raise BotBottleError(f"invalid environment variable name {key!r}")
                out.append(f"{key}={value}")
        return out + list(argv)

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        return self.kube.exec(
            self.pod,
            AGENT_CONTAINER,
            self.command(argv, user=user, env=env, workdir=workdir),
            stdin=stdin,
        )

    def _run(self, argv: Sequence[str], stdin: bytes | None) -> ExecResult:
        return self.kube.exec(self.pod, AGENT_CONTAINER, list(argv), stdin=stdin)

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        transfer.copy_in(self._run, src, dest)
        for argv in (
            ["chmod", f"{mode:o}", dest] if mode is not None else None,
            ["chown", "-R" if src.is_dir() else "--", owner, dest] if owner else None,
        ):
            if argv is None:
                continue
            result = self._run(argv, None)
            if not result.ok:
                raise BotBottleError(
                    f"{argv[0]} {dest} in the pod failed: "
                    f"{result.stderr.decode(errors='replace').strip()[:200]}"
                )

    def copy_out(self, src: str, dest: Path) -> None:
        transfer.copy_out(self._run, src, dest)

    def seed_workspace(self, src: Path, dest: str) -> None:
        """The operator's directory into the pod's emptyDir, owned by the agent."""
        self.copy_in(src, dest, owner=self.user if self.user != "root" else None)

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        ws = self.kube.open_exec(
            self.pod, AGENT_CONTAINER, self.command(argv, user=user, workdir=self.workdir), tty=True
        )
        return interactive.attach(ws)

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        ws = self.kube.open_exec(
            self.pod,
            AGENT_CONTAINER,
            self.command(argv, user=user, workdir=self.workdir),
            tty=False,
        )
        try:
            return interactive.pump(
                ws, in_fd=None, out_fd=sys.stdout.fileno(), err_fd=sys.stderr.fileno()
            )
        finally:
            ws.close()
