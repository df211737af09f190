"""The Kubernetes backend: two pods per bottle, fenced by NetworkPolicy.

``prepare`` renders the bottle's objects (:mod:`bot_bottle_kubernetes.render`)
and needs no cluster: ``start --dry-run --json`` prints them. The cluster side
(creating them, the fence probe, exec, cleanup by labels) talks to the API
server through the official ``kubernetes`` client, imported lazily
(:mod:`.cluster`, :mod:`.lifecycle`, :mod:`.launcher`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle.contracts.backend import (
    ActiveBottle,
    Backend,
    BottlePlan,
    CleanupItem,
    EgressControl,
    PreparedBottle,
    RunningBottle,
)
from bot_bottle.contracts.common import Availability, HostCheck
from bot_bottle.errors import BotBottleError
from bot_bottle.termtext import visible
from bot_bottle_kubernetes.prepared import ENV_PREFIX, KubeOptions, KubernetesPrepared, prepare
from bot_bottle_kubernetes.render import BACKEND

if TYPE_CHECKING:
    from bot_bottle_kubernetes.cluster import Kube

#: CNIs known to enforce NetworkPolicy, by the DaemonSet they run in kube-system.
ENFORCING_CNIS = {
    "calico-node": "Calico",
    "cilium": "Cilium",
    "kube-router": "kube-router",
    "antrea-agent": "Antrea",
    "weave-net": "Weave Net",
    "kube-network-policies": "kube-network-policies (kind >= 0.24)",
}
#: What ``runsc`` (gVisor) registers as the RuntimeClass handler.
RUNSC_HANDLER = "runsc"


def _stderr_progress(line: str) -> None:
    import sys

    sys.stderr.write(f"{line}\n")


class KubernetesBackend(Backend):
    name = BACKEND
    description = "Kubernetes cluster: agent pod and sidecar pod, fenced by NetworkPolicy"

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.progress = progress or _stderr_progress

    # -- where ---------------------------------------------------------------

    def _target(self, namespace: str | None = None) -> Any:
        from bot_bottle_kubernetes.cluster import KubeTarget

        if namespace is None:
            namespace = os.environ.get(ENV_PREFIX + "NAMESPACE") or KubeOptions().namespace
        return KubeTarget.from_env(namespace)

    def _connect(self, namespace: str | None = None, *, timeout: float = 30.0) -> Kube:
        from bot_bottle_kubernetes.cluster import connect

        return connect(self._target(namespace), timeout=timeout)

    def is_available(self) -> Availability:
        from bot_bottle_kubernetes.cluster import NO_CONTEXT_HINT, context_problem

        problem = context_problem(self._target())
        if problem is not None:
            return Availability.no(problem, NO_CONTEXT_HINT)
        return Availability.yes("kube context configured")

    def host_checks(self) -> list[HostCheck]:
        from bot_bottle_kubernetes.cluster import NO_CONTEXT_HINT, KubeError, context_problem

        problem = context_problem(self._target())
        if problem is not None:
            return [HostCheck("WARN", "kubernetes cluster", problem, NO_CONTEXT_HINT)]
        try:
            kube = self._connect(timeout=10.0)
            return cluster_checks(kube)
        except KubeError as e:
            return [HostCheck("FAIL", "kubernetes cluster", e.message, e.hint)]

    # -- launch ----------------------------------------------------------------

    def prepare(self, plan: BottlePlan) -> KubernetesPrepared:
        return prepare(plan, self.name)

    @contextlib.contextmanager
    def launch(self, prepared: PreparedBottle) -> Iterator[RunningBottle]:
        if not isinstance(prepared, KubernetesPrepared):
            raise BotBottleError("launch needs what KubernetesBackend.prepare returned")
        from bot_bottle_sidecars.launch.bring_back import default_scanner
        from bot_bottle_sidecars.launch.ca import AGENT_CA_CERT, generate_bottle_ca

        from bot_bottle.contracts.provider import GUEST_CA_PATH
        from bot_bottle_kubernetes import bring_back as workspace_back
        from bot_bottle_kubernetes import pending_back
        from bot_bottle_kubernetes.cluster import MIN_SERVER, KubeError
        from bot_bottle_kubernetes.freezer import keep_changes, mark_launch
        from bot_bottle_kubernetes.images import check_registry, push_images
        from bot_bottle_kubernetes.launcher import launch_bottle
        from bot_bottle_kubernetes.lifecycle import holder_identity
        from bot_bottle_kubernetes.operator_sync import QueueMirror
        from bot_bottle_kubernetes.render import (
            WORKSPACE,
            render_bottle,
            render_namespace,
            split_agent_env,
        )

        plan, opts = prepared.plan, prepared.options
        # Before anything is built or created: a clear error, nothing to undo.
        kube = self._connect(opts.namespace)
        major, minor, git = kube.server_version()
        if (major, minor) < MIN_SERVER:
            raise KubeError(
                f"the cluster runs Kubernetes {git}; bottles need >= "
                f"{MIN_SERVER[0]}.{MIN_SERVER[1]} (native sidecar containers)",
                hint="upgrade the cluster or use another kube context",
            )
        registry = check_registry(opts.registry) if opts.registry else None
        runtime_class = opts.runtime_class if _has_runtime_class(kube, opts.runtime_class) else None
        agent_image = plan.agent_image or _agent_image(plan, self.progress)
        bundle_image = plan.bundle_image or _bundle_image(self.progress)
        images = {"agent": agent_image, "bundle": bundle_image}
        if registry is not None:
            # The nodes pull from the registry, by digest: what runs is what was built.
            images = push_images(images, registry)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bb-k8s-"))
            gate_keys = _stage_keys(plan, Path(tmp) / "keys", stack)
            ca_dir = Path(tmp) / "ca"
            generate_bottle_ca(ca_dir, name=f"bot-bottle {plan.slug}")
            ca_files = {p.name: p.read_bytes() for p in sorted(ca_dir.iterdir())}
            upstream = _upstream_ca(plan)
            launcher_id = holder_identity()
            # Logs and proposals outlive the bottle (`bot-bottle logs`), as on
            # Docker; here they are read out of the bundle pod at teardown.
            from bot_bottle.history import BottleHistory

            history = BottleHistory.for_slug(plan.slug)
            history.begin(
                {"slug": plan.slug, "agent": plan.agent, "bottle": plan.bottle,
                 "backend": self.name, "label": plan.label}
            )  # fmt: skip
            # The host queue the console and `proposals` read, as on Docker;
            # the launcher mirrors the bundle pod's queue into it (operator_sync).
            from bot_bottle.contracts.supervise import default_queue_dir

            queue = default_queue_dir(plan.slug)
            queue.mkdir(parents=True, exist_ok=True, mode=0o700)
            stack.callback(lambda: history.end(queue))

            def render(anchor_uid: str, bundle_address: str) -> list[dict[str, Any]]:
                return render_bottle(
                    plan,
                    namespace=opts.namespace,
                    images=images,
                    anchor_uid=anchor_uid,
                    bundle_address=bundle_address,
                    ca_files=ca_files,
                    gate_keys=gate_keys,
                    upstream_ca=upstream,
                    runtime_class=runtime_class,
                    host_users=False if opts.user_namespace else None,
                    seccomp=opts.seccomp,
                    pod_cidrs=opts.pod_cidrs,
                    service_cidrs=opts.service_cidrs,
                    deadline_seconds=opts.deadline_seconds,
                    launcher=launcher_id,
                )

            with launch_bottle(
                kube,
                slug=plan.slug,
                render=render,
                namespace_objects=render_namespace(opts.namespace),
                service_cidrs=opts.service_cidrs,
                public_target=_public_target(),
                user=plan.provider_plan.user,
                workdir=prepared.workdir,
                exec_env=split_agent_env(plan)[1],
                progress=self.progress,
            ) as bottle:
                seeded: workspace_back.Launch | None = None
                mirror = QueueMirror(
                    bundle_exec(kube, prepared.names["sidecars"]), queue, history.logs_dir
                )
                mirror.start()
                try:
                    # Before anything is provisioned: what commit freezes is newer.
                    if not mark_launch(bottle.raw_exec):
                        self.progress(f"warning: {plan.slug}: no launch marker in the agent pod; "
                                      "'bot-bottle commit' will refuse this bottle")  # fmt: skip
                    bottle.copy_in(ca_dir / AGENT_CA_CERT, GUEST_CA_PATH, mode=0o644, owner="root")
                    if plan.cwd is not None:
                        launch_info = workspace_back.Launch.read(plan.cwd, plan.slug)
                        bottle.seed_workspace(plan.cwd, WORKSPACE)
                        seeded = launch_info
                        # Before the agent runs: stop and cleanup bring back from it too.
                        pending_back.record_launch(
                            launch_info,
                            cwd=plan.cwd,
                            namespace=opts.namespace,
                            agent_pod=prepared.names["agent"],
                        )
                        # Said before the agent runs, not discovered after it.
                        self.progress(
                            f"warning: {visible(str(plan.cwd))} was copied into the pod; only "
                            "the agent's commits come back (scanned, as "
                            f"bot-bottle/{plan.slug}/<branch>), its other changes in "
                            f"{WORKSPACE} go with the pod"
                        )
                    yield bottle
                finally:
                    try:
                        if bottle.kept:  # the agent exited non-zero: resume builds from these
                            keep_changes(bottle.raw_exec, plan.slug, images["agent"], self.progress)
                        if seeded is not None and plan.cwd is not None:
                            secrets = list(plan.gitgate_secrets.values())
                            scanner = default_scanner(secrets)
                            pending_back.teardown(
                                plan.slug,
                                bottle.raw_exec,
                                workspace_back.guarded_scanner(scanner, seeded.protected),
                                self.progress,
                                pending_back.pod_exists(kube, prepared.names["agent"]),
                            )
                    finally:
                        mirror.stop()
                        keep_history(kube, prepared.names["sidecars"], history.logs_dir, queue)

    # -- enumeration -------------------------------------------------------------

    def _kube_or_none(self) -> Kube | None:
        """The cluster to enumerate, or None when this home never used one.

        A kubeconfig is common for reasons that have nothing to do with
        bot-bottle: ``list`` and ``cleanup`` ask its cluster only when a
        bottle of this home ran on this backend (its state dir says so) or
        the operator named the namespace or context for it."""
        from bot_bottle_kubernetes.cluster import context_problem

        if context_problem(self._target()) is not None:
            return None
        opted_in = any(os.environ.get(ENV_PREFIX + n) for n in ("NAMESPACE", "CONTEXT"))
        if not (opted_in or _used_here()):
            return None
        return self._connect(timeout=10.0)

    def _enumerate(self, what: str, fn: Callable[[Kube], list[Any]]) -> list[Any]:
        from bot_bottle_kubernetes.cluster import KubeError

        try:
            kube = self._kube_or_none()
            return fn(kube) if kube is not None else []
        except KubeError as e:
            # One unreachable cluster must not break `list`/`cleanup` for the
            # other backends; say so instead of claiming there is nothing.
            import sys

            sys.stderr.write(f"warning: cannot {what} on the Kubernetes cluster: {e.message}\n")
            return []

    def list_active(self) -> list[ActiveBottle]:
        from bot_bottle_kubernetes.lifecycle import active

        return self._enumerate("list bottles", active)

    def find_orphans(self) -> list[CleanupItem]:
        from bot_bottle_kubernetes.lifecycle import orphans
        from bot_bottle_kubernetes.pending_back import leftover_items

        return self._enumerate("look for orphans", orphans) + leftover_items()

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        from bot_bottle_kubernetes import pending_back
        from bot_bottle_kubernetes.lifecycle import cleanup
        from bot_bottle_kubernetes.operator_sync import keep_orphan_history

        mine = [i for i in items if i.backend == self.name]
        if not mine:
            return []
        removed: list[CleanupItem] = []
        by_ns: dict[str | None, list[CleanupItem]] = {}
        for item in mine:
            if item.kind != pending_back.ITEM_KIND:
                by_ns.setdefault(item.extra.get("namespace"), []).append(item)
        for record_ns, slug in pending_back.unfinished(mine):
            # A dead launcher's bottle not (yet) an orphan: its pod may still be there.
            pending_back.before_removal(self._connect(record_ns), slug, self.progress, by="cleanup")
        for namespace, group in by_ns.items():
            kube = self._connect(namespace)
            for item in group:
                # The commits out of the agent pod while it is still there.
                pending_back.before_removal(kube, item.slug or "", self.progress, by="cleanup")
                keep_orphan_history(kube, item.slug or "")
            removed += cleanup(kube, group)
        return removed + pending_back.settle_items(mine, self.progress)

    def egress_control(self, slug: str) -> EgressControl | None:
        from bot_bottle_kubernetes.egress_live import control_for

        return control_for(self, slug)

    def stop(self, slug: str) -> bool:
        """Delete the agent pod: the launcher's exec ends, and it tears the rest
        down. The agent's commits come back first (:mod:`.pending_back`)."""
        from bot_bottle_kubernetes.lifecycle import active
        from bot_bottle_kubernetes.pending_back import before_removal
        from bot_bottle_kubernetes.render import names

        kube = self._kube_or_none()
        if kube is None or slug not in {b.slug for b in active(kube)}:
            return False
        before_removal(kube, slug, self.progress, by="stop")
        return kube.delete("Pod", names(slug)["agent"], propagation="Background")


def _stage_keys(plan: BottlePlan, keys_dir: Path, stack: contextlib.ExitStack) -> dict[str, bytes]:
    """git-gate's deploy keys (file name -> key) for the bundle's Secret, as
    the Docker backend stages them; provisioned ones are revoked when
    ``stack`` closes, after the bottle's teardown."""
    if plan.gitgate is None or not plan.gitgate.enabled:
        return {}
    from bot_bottle_sidecars.launch.keys import GateKeys

    keys = GateKeys(plan.gitgate, keys_dir, bottle_slug=plan.slug)
    stack.callback(keys.close)
    return {path.name: path.read_bytes() for path in keys.stage().values()}


def bundle_exec(kube: Kube, bundle_pod: str) -> Callable[[Sequence[str], bytes | None], Any]:
    """Plain execs in the bundle pod's container (its user: root)."""
    from bot_bottle_kubernetes.launcher import BUNDLE_CONTAINER

    def run(argv: Sequence[str], stdin: bytes | None) -> Any:
        return kube.exec(bundle_pod, BUNDLE_CONTAINER, argv, stdin=stdin, timeout=120)

    return run


def keep_history(kube: Kube, bundle_pod: str, logs_dir: Path, queue_dir: Path) -> None:
    """The bundle pod's daemon logs into the bottle's history, and its
    supervise queue where ``history.end`` takes the proposals from (the
    last pass after :class:`QueueMirror`'s). A failure is a warning: the
    teardown goes on."""
    import sys

    from bot_bottle_sidecars.layout import LOG_DIR, QUEUE_DIR

    from bot_bottle_kubernetes.transfer import pull_tree

    run = bundle_exec(kube, bundle_pod)

    for src, dest in ((LOG_DIR, logs_dir), (QUEUE_DIR, queue_dir)):
        try:
            dest.mkdir(parents=True, exist_ok=True, mode=0o700)
            pull_tree(run, src, dest)
        except BotBottleError as e:
            sys.stderr.write(f"warning: could not keep {src} of {bundle_pod}: {e.message}\n")


def _used_here() -> bool:
    """Whether a state dir of this home names this backend."""
    from bot_bottle.state import all_states

    return any(s.metadata().get("backend") == BACKEND for s in all_states())


def _upstream_ca(plan: BottlePlan) -> bytes | None:
    if plan.upstream_ca is None:
        return None
    try:
        return plan.upstream_ca.read_bytes()
    except OSError as exc:
        raise BotBottleError(
            f"cannot read the bottle's egress.upstream_ca {plan.upstream_ca}: {exc.strerror}",
            hint="point upstream_ca at a readable PEM file",
        ) from None


def _public_target() -> tuple[str, int]:
    from bot_bottle_kubernetes.fence import DEFAULT_PUBLIC

    raw = os.environ.get(ENV_PREFIX + "FENCE_PUBLIC")
    if not raw:
        return DEFAULT_PUBLIC
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise BotBottleError(
            f"{ENV_PREFIX}FENCE_PUBLIC: {raw!r} is not IP:PORT",
            hint="a public address the fence must block, e.g. 1.1.1.1:443",
        )
    return host, int(port)


def _agent_image(plan: BottlePlan, progress: Callable[[str], None]) -> str:
    from bot_bottle_docker.images import ensure_agent_image

    return ensure_agent_image(plan.agent_image_spec, progress=progress).tag


def _bundle_image(progress: Callable[[str], None]) -> str:
    from bot_bottle_docker.images import ensure_bundle_image

    return ensure_bundle_image(progress=progress).tag


def _has_runtime_class(kube: Kube, name: str | None) -> bool:
    from bot_bottle_kubernetes.cluster import KubeError

    if not name:
        return False
    try:
        return kube.get("RuntimeClass", name) is not None
    except KubeError:
        return False


def cluster_checks(kube: Kube) -> list[HostCheck]:
    """``doctor``'s lines for a reachable cluster. Never raises."""
    from bot_bottle_kubernetes.cluster import MIN_SERVER, KubeError

    checks: list[HostCheck] = []
    try:
        major, minor, git = kube.server_version()
    except KubeError as e:
        return [HostCheck("FAIL", "kubernetes cluster", e.message, e.hint)]
    need = f"{MIN_SERVER[0]}.{MIN_SERVER[1]}"
    if (major, minor) >= MIN_SERVER:
        checks.append(HostCheck("OK", "kubernetes server", f"{git} (>= {need})"))
    else:
        checks.append(
            HostCheck(
                "FAIL",
                "kubernetes server",
                f"{git}: bottles need >= {need} (native sidecar containers)",
                "upgrade the cluster or use another kube context",
            )
        )
    try:
        sets = kube.list("DaemonSet", namespace="kube-system")
        names = [str(d["metadata"]["name"]) for d in sets]
        known = sorted({v for n in names for k, v in ENFORCING_CNIS.items() if n.startswith(k)})
    except KubeError:
        known = []
    if known:
        checks.append(
            HostCheck(
                "OK",
                "NetworkPolicy enforcement",
                f"known: {', '.join(known)} runs in kube-system "
                "(each launch still probes the fence)",
            )
        )
    else:
        checks.append(
            HostCheck(
                "WARN",
                "NetworkPolicy enforcement",
                "unknown: no CNI known to enforce NetworkPolicy found in kube-system",
                "each launch probes the fence from the agent pod and refuses to run when it "
                "is open; use Calico, Cilium or kind >= 0.24",
            )
        )
    try:
        classes = kube.list("RuntimeClass")
        runsc = [str(c["metadata"]["name"]) for c in classes if c.get("handler") == RUNSC_HANDLER]
    except KubeError as e:
        checks.append(HostCheck("WARN", "gVisor RuntimeClass", f"cannot list: {e.message}"))
        return checks
    if runsc:
        checks.append(HostCheck("OK", "gVisor RuntimeClass", f"present: {', '.join(runsc)}"))
    else:
        checks.append(
            HostCheck(
                "WARN",
                "gVisor RuntimeClass",
                "absent: agent pods run on the nodes' default runtime",
                "install gVisor on the nodes and create a RuntimeClass with handler runsc",
            )
        )
    return checks
