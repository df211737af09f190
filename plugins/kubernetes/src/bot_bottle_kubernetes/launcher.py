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

import base64
import ipaddress
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot_bottle.contracts.backend import ExecResult, RunningBottle
from bot_bottle.errors import BotBottleError
from bot_bottle_kubernetes import fence, interactive, transfer
from bot_bottle_kubernetes.cluster import ApiFailure, Kube, KubeError, wait_for_pods
from bot_bottle_kubernetes.lifecycle import LABEL_ROLE, BottleObjects
from bot_bottle_kubernetes.netpol import foreign_policies

log = logging.getLogger(__name__)

AGENT_CONTAINER = "agent"
BUNDLE_CONTAINER = "sidecars"
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
    exec_env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[KubeRunningBottle]:
    from bot_bottle_kubernetes.render import PENDING_ADDRESS, PENDING_UID

    first = render(PENDING_UID, PENDING_ADDRESS)
    agent_name = str(_pod(first, "agent")["metadata"]["name"])
    bundle_name = str(_pod(first, "sidecars")["metadata"]["name"])
    pod_labels = [o["metadata"]["labels"] for o in first if o["kind"] == "Pod"]
    others = foreign_policies(kube.list("NetworkPolicy"), kube.namespace, pod_labels)
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

        bottle = KubeRunningBottle(
            slug, kube, agent_name, user=user, workdir=workdir, exec_env=exec_env
        )
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
        # Plain execs as root: the probe carries none of the agent's environment.
        fence.require_fenced(fence.run_probe(lambda argv: bottle.raw_exec(argv, None), targets))
        yield bottle
    finally:
        failures = objects.teardown()
        if failures:
            log.warning("bottle %s: teardown left %s", slug, "; ".join(failures))
            sys.stderr.write(
                f"warning: teardown of {slug} could not remove: {'; '.join(failures)} "
                "(`bot-bottle cleanup` retries)\n"
            )


#: Reads ``NAME=base64(value)`` lines from stdin up to a blank line, exports
#: them, then execs its arguments. POSIX ``read`` consumes no byte past the
#: newline, so the command's own stdin follows untouched. On a TTY it turns
#: echo off and prints the marker first, so the values are never echoed.
ENV_WRAPPER = (
    "if [ -t 0 ]; then stty -echo; printf '\\036'; fi; "
    'while IFS= read -r kv && [ -n "$kv" ]; do '
    # the x keeps a value's trailing newlines, which $(...) would strip
    'v=$(printf %s "${kv#*=}" | base64 -d; printf x); export "${kv%%=*}=${v%x}"; done; '
    "if [ -t 0 ]; then stty echo; fi; "
    'exec "$@"'
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class KubeRunningBottle(RunningBottle):
    """The agent pod, reached through ``pods/exec`` only."""

    def __init__(
        self,
        slug: str,
        kube: Kube,
        pod: str,
        *,
        user: str,
        workdir: str | None = None,
        exec_env: Mapping[str, str] | None = None,
    ) -> None:
        self.slug = slug
        self.kube = kube
        self.pod = pod
        self.user = user
        self.workdir = workdir
        #: Agent variables kept out of the pod spec (render's ``split_agent_env``).
        self.exec_env = dict(exec_env or {})
        #: Set by keep_for_resume (the agent exited non-zero).
        self.kept = False

    def command(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> tuple[list[str], bytes]:
        """``argv`` as the container runs it, and the stdin preamble.

        Exec has no user, env or cwd options: ``runuser`` and ``env -C``
        (both in every Debian image) supply user and cwd. Environment values
        never go into the argv, which is the exec URL's query and so lands
        in the API server's audit log: :data:`ENV_WRAPPER` reads them from
        stdin."""
        if not argv:
            raise BotBottleError("exec needs a command")
        out: list[str] = []
        who = user or self.user
        if who not in ("root", "0"):
            out += ["runuser", "-u", who, "--"]
        if workdir:
            out += ["env", "-C", workdir]
        out += list(argv)
        values = {**self.exec_env, **(env or {})}
        if not values:
            return out, b""
        lines = []
        for key, value in values.items():
            if not _ENV_NAME.fullmatch(key):
                raise BotBottleError(f"invalid environment variable name {key!r}")
            lines.append(f"{key}={base64.b64encode(value.encode()).decode()}\n".encode())
        return ["sh", "-c", ENV_WRAPPER, "sh", *out], b"".join(lines) + b"\n"

    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        command, preamble = self.command(argv, user=user, env=env, workdir=workdir)
        return self.kube.exec(self.pod, AGENT_CONTAINER, command, stdin=preamble + (stdin or b""))

    def keep_for_resume(self) -> None:
        # A pod cannot be stopped and kept as a container can: the launch's
        # teardown keeps the agent's changes instead (freezer.keep_changes).
        self.kept = True

    def raw_exec(self, argv: Sequence[str], stdin: bytes | None) -> ExecResult:
        """``argv`` exactly, as the container's user (root), no env of the agent's."""
        return self.kube.exec(self.pod, AGENT_CONTAINER, list(argv), stdin=stdin)

    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        transfer.copy_in(self.raw_exec, src, dest)
        for argv in (
            ["chmod", f"{mode:o}", dest] if mode is not None else None,
            ["chown", "-R" if src.is_dir() else "--", owner, dest] if owner else None,
        ):
            if argv is None:
                continue
            result = self.raw_exec(argv, None)
            if not result.ok:
                raise BotBottleError(
                    f"{argv[0]} {dest} in the pod failed: "
                    f"{result.stderr.decode(errors='replace').strip()[:200]}"
                )

    def copy_out(self, src: str, dest: Path) -> None:
        transfer.copy_out(self.raw_exec, src, dest)

    def seed_workspace(self, src: Path, dest: str) -> None:
        """The operator's directory into the pod's emptyDir, owned by the agent."""
        self.copy_in(src, dest, owner=self.user if self.user != "root" else None)

    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        command, preamble = self.command(argv, user=user, workdir=self.workdir)
        ws = self.kube.open_exec(self.pod, AGENT_CONTAINER, command, tty=True)
        return interactive.attach(ws, preamble=preamble)

    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        command, preamble = self.command(argv, user=user, workdir=self.workdir)
        ws = self.kube.open_exec(self.pod, AGENT_CONTAINER, command, tty=False)
        try:
            return interactive.pump(
                ws,
                in_fd=None,
                out_fd=sys.stdout.fileno(),
                err_fd=sys.stderr.fileno(),
                preamble=preamble,
            )
        finally:
            ws.close()
