"""The Docker backend.

Network design (stricter than an ``--internal`` network, for the reason
below): the agent container gets **no network** (``network_mode="none"``: loopback
only). A container on an ``--internal`` network still reaches every address
of the host (tests/test_docker_engine.py measures it), and Docker's embedded
resolver forwards outside names to the host's resolver; with no interface
there is no route anywhere and no DNS at all. The agent's three endpoints
(proxy, git-gate, supervise) are ``127.0.0.1:<port>`` in its own network
namespace, served by a small relay container that joins only that namespace
(``network_mode="container:<agent>"``; the agent cannot see or kill it) and
forwards to Unix sockets in a per-bottle directory, where the sidecar bundle
(on its own egress bridge network, with the bottle's ``extra_hosts`` pins)
serves them. The bundle's daemons listen on its loopback only.

gVisor: when the engine has ``runsc`` registered (and ``gvisor`` is not
turned off) the agent runs under it. Caveat, unverified here (no runsc on
these machines): gVisor has its own network stack, so a runc relay container
joining the agent's namespace may not share its loopback; runsc then needs the
relay inside the sandbox and ``--host-uds`` for the sockets.

Every resource carries ``bot-bottle.slug``, ``bot-bottle.agent``,
``bot-bottle.backend`` and ``bot-bottle.role`` labels; ``list_active`` and
``find_orphans`` work from them alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bot_bottle_sidecars.launch import bring_back
from bot_bottle_sidecars.layout import (
    AGENT_READY,
    BUNDLE_READY,
    CA_DIR,
    DAEMON_USERS,
    ETC,
    GATE_ALLOW_DIR,
    GATE_KEYS,
    INIT_STATUS,
    LOG_DIR,
    QUEUE_DIR,
    SECRETS_CA,
    SECRETS_GATE_KEYS,
    SOCK_DIR,
    agent_relay_argv,
    bundle_hosts,
    endpoints,
    shared_dir_users,
)

from bot_bottle.backend_kit import (
    L_AGENT,
    L_BACKEND,
    L_HOME,
    L_LABEL,
    L_LAUNCHER,
    L_ROLE,
    L_SERVICES,
    L_SLUG,
    L_STARTED,
    begin_history,
    bottle_labels,
    copy_in_tar,
)
from bot_bottle.contracts.backend import (
    ActiveBottle,
    Backend,
    BaseImageRequest,
    BottlePlan,
    CleanupItem,
    DaemonState,
    EgressControl,
    PreparedBottle,
    RunningBottle,
)
from bot_bottle.contracts.common import Availability, HostCheck
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.manifest.models import Limits, memory_bytes
from bot_bottle.state import (
    StateDir,
    all_states,
    home_id,
    launcher_gone,
    now_iso,
)
from bot_bottle.teardown import Teardown
from bot_bottle.termtext import visible
from bot_bottle_docker import nested_git, tree_owner, workspace_git, workspace_tree, worktree_guards
from bot_bottle_docker.hostperms import grant_dir
from bot_bottle_docker.running import DockerRunningBottle
from bot_bottle_docker.seccomp import seccomp_opt

if TYPE_CHECKING:
    import docker

    from bot_bottle_docker.images import DockerCLI

NAME = "docker"
READY_TIMEOUT = 60.0
#: cleanup: passes over an orphaned bottle's labels, and the pause before each.
_CLEANUP_PASSES = 4
_CLEANUP_SETTLE = 0.5
_REMOVE_TRIES = 5
WORKSPACE = "/workspace"
#: The only capabilities a root exec in the agent container has (provisioning:
#: file ownership and modes, runuser to the agent user). The agent's own uid
#: has none; raw sockets, mknod, chroot and the rest are gone for everyone.
AGENT_ROOT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID")
#: What the bundle's init needs, and nothing else: start daemons as their
#: users and drop their capabilities (SETUID, SETGID, SETPCAP), signal them
#: (KILL), read the root-only secret mounts whatever host uid owns them
#: (DAC_OVERRIDE) and hand private copies to a daemon's user (CHOWN, FOWNER).
#: The daemons themselves keep none (bot_bottle_sidecars.init.privileges).
BUNDLE_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETPCAP", "SETUID"]
#: The private copies of the secrets live in memory, never in the container's layer.
PRIVATE_TMPFS = "size=1m,mode=0700"

log = get_logger("bot_bottle_docker")


@dataclass(frozen=True)
class DockerPrepared(PreparedBottle):
    network: str = ""
    bundle_name: str = ""
    agent_name: str = ""
    relay_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    services: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "containers": [self.bundle_name, self.agent_name, self.relay_name],
            "agent_network": "none (loopback only; endpoints relayed over Unix sockets)",
            "services": list(self.services),
            "workdir": self.workdir,
        }


def _client() -> docker.DockerClient:
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        raise BotBottleError(
            f"cannot reach the Docker engine: {exc}",
            hint="start dockerd (or set DOCKER_HOST); 'bot-bottle doctor' checks it",
        ) from None
    return client


def gvisor_runtime(
    client: docker.DockerClient, image: str, progress: Callable[[str], None] | None = None
) -> str | None:
    """``runsc`` when it is registered *and* the probe shows a bottle works
    under it (bot_bottle_docker.gvisor); else None (runc), saying why."""
    from bot_bottle_docker import gvisor

    if not gvisor.registered(client):
        return None
    state = gvisor.probe(client, image)
    if state.usable:
        return gvisor.RUNTIME
    if progress is not None:
        progress(f"gvisor: runsc is registered but not used: {state.detail}")
    log.info("gvisor_unusable", detail=state.detail)
    return None


class DockerBackend(Backend):
    name = NAME
    description = "Docker engine: agent with no network, sidecar bundle"

    def __init__(self) -> None:
        #: Progress lines (image builds, phases); the CLI sets it.
        self.progress: Callable[[str], None] = _stderr_progress

    def is_available(self) -> Availability:
        from bot_bottle_docker.dockerhost import DockerUnreachable, probe

        try:
            # A busy engine answers /info slowly (seconds, with many
            # containers); "unavailable" then would make cleanup skip it.
            info = probe(timeout=15.0)
        except DockerUnreachable as exc:
            return Availability.no(str(exc), "start dockerd or set DOCKER_HOST")
        runtimes = ", ".join(info.runtimes)
        return Availability.yes(
            f"Docker {info.version} (runtimes: {runtimes}); gVisor: {_gvisor_doctor(info)}"
        )

    def host_checks(self) -> list[HostCheck]:
        """The engine and the base image, as ``doctor`` shows them."""
        from bot_bottle_docker.baseimage import engine_hint, image_name, setup_hint
        from bot_bottle_docker.dockerhost import DockerUnreachable, image_exists, probe

        try:
            info = probe()
        except DockerUnreachable as exc:
            engine = HostCheck("FAIL", "docker", str(exc), engine_hint())
        else:
            runtimes = f", runtimes: {', '.join(info.runtimes)}" if info.runtimes else ""
            engine = HostCheck(
                "OK",
                "docker",
                f"Docker {info.version} (API {info.api_version}) at {info.host}{runtimes}",
            )
        name = image_name()
        try:
            present = image_exists(name)
        except DockerUnreachable as exc:
            base = HostCheck(
                "WARN", "base image", f"cannot check {name}: {exc}", "start Docker first"
            )
        else:
            base = (
                HostCheck("OK", "base image", f"{name} is present")
                if present
                else HostCheck(
                    "FAIL",
                    "base image",
                    f"{name} is missing: every bottle image builds FROM it",
                    setup_hint(),
                )
            )
        return [engine, base]

    def setup(self, request: BaseImageRequest, progress: Callable[[str], None]) -> str:
        from bot_bottle_docker import baseimage
        from bot_bottle_docker.dockerhost import DockerUnreachable, image_exists

        target = baseimage.image_name()
        try:
            present = image_exists(target)
        except DockerUnreachable as exc:
            raise BotBottleError(str(exc), hint=baseimage.engine_hint()) from None
        if present and not request.force:
            return f"base image {target} already present"
        if request.from_image:
            baseimage.from_image(request.from_image, target, progress)
        elif request.rootfs is not None:
            baseimage.from_rootfs(request.rootfs, target, progress)
        else:
            baseimage.debootstrap(
                target,
                progress,
                suite=request.suite or baseimage.DEFAULT_SUITE,
                mirror=request.mirror or baseimage.DEFAULT_MIRROR,
            )
        return f"base image {target} created"

    def preflight(self, plan: BottlePlan) -> dict[str, str]:
        if not _use_gvisor(plan):
            return {"gvisor": "off (--no-gvisor)"}
        from bot_bottle_docker.dockerhost import DockerUnreachable, probe

        try:
            runtimes = probe(timeout=2.0).runtimes
        except DockerUnreachable:
            return {"gvisor": "unknown (engine unreachable)"}
        if "runsc" not in runtimes:
            return {"gvisor": "not registered (runc)"}
        return {
            "gvisor": "runsc registered (used if the launch probe shows a bottle works under it)"
        }

    # -- prepare (pure) ------------------------------------------------------------

    def prepare(self, plan: BottlePlan) -> DockerPrepared:
        prefix = f"bb-{plan.slug}"
        labels = bottle_labels(plan, NAME, endpoints(plan))
        return DockerPrepared(
            plan=plan,
            backend=NAME,
            network=f"{prefix}-egress",
            bundle_name=f"{prefix}-sidecars",
            agent_name=f"{prefix}-agent",
            relay_name=f"{prefix}-relay",
            labels=labels,
            workdir=WORKSPACE if plan.cwd else plan.provider_plan.guest_home,
            services=tuple(endpoints(plan)),
        )

    # -- launch --------------------------------------------------------------------

    @contextlib.contextmanager
    def launch(self, prepared: PreparedBottle) -> Iterator[RunningBottle]:
        if not isinstance(prepared, DockerPrepared):
            raise BotBottleError("launch needs what DockerBackend.prepare returned")
        plan = prepared.plan
        client = _client()  # before anything is created: a clear error, nothing to undo
        timings: dict[str, float] = {}
        with Teardown(plan.slug) as down:
            down.push("docker client", client.close)
            # The image checks (a few engine round trips each; on a first
            # run, builds sharing the cores) run while the files are written
            # and the CA minted; "images" is what is left to wait after that.
            images = ThreadPoolExecutor(max_workers=3, thread_name_prefix="bb-images")
            from bot_bottle_docker.images import EngineChecks

            engine = EngineChecks(client)
            fut_bundle_tag = images.submit(
                lambda: plan.bundle_image or self._ensure_bundle_image(engine)
            )
            fut_agent_tag = images.submit(
                lambda: plan.agent_image or self._ensure_agent_image(plan, engine)
            )
            labels = {**prepared.labels, L_STARTED: now_iso()}
            #: ids of what the parallel removal took (teardown).
            removed: set[str] = set()
            # The network needs neither the files nor the images, and the
            # bundle (the launch's long pole) waits for it: made meanwhile.
            fut_network = images.submit(
                self._create_network, client, prepared, labels, down, removed
            )
            try:
                t = time.monotonic()
                state = StateDir.for_slug(plan.slug)
                run_dir = state.run_dir
                etc, sock = run_dir / "etc", run_dir / "sock"
                history, queue = begin_history(plan, NAME)
                down.push("history", lambda: history.end(queue))
                down.push("runtime files", lambda: shutil.rmtree(run_dir, ignore_errors=True))
                self._write_files(plan, etc, sock, queue)
                workspace, git_dirs_at_launch, guarded = self._prepare_workspace(plan, state)
                keys_dir = run_dir / "keys"
                self._stage_keys(plan, keys_dir, down)
                timings["files"] = time.monotonic() - t
                t = time.monotonic()
                bundle_tag, agent_tag = fut_bundle_tag.result(), fut_agent_tag.result()
                network = fut_network.result()
                timings["images"] = time.monotonic() - t
                # The tree record names the helper image (the bundle's), so it
                # waits for the image check.
                record = self._tree_record(plan, state, workspace, guarded, git_dirs_at_launch,
                                           bundle_tag, prepared.agent_name)  # fmt: skip
            except BaseException:
                from bot_bottle_docker.images import stop_running_builds

                # Ctrl-C/SIGTERM land on this thread, not on the image
                # checks': stop their builds, or shutdown() waits them out.
                stop_running_builds()
                raise
            finally:
                images.shutdown(wait=True, cancel_futures=True)

            t = time.monotonic()

            def start_bundle() -> Any:
                mounts = (run_dir, keys_dir, queue, history.logs_dir)
                return self._start_bundle(
                    client, prepared, labels, bundle_tag, mounts, down, removed=removed,
                    network=network,
                )  # fmt: skip

            kept: list[DockerRunningBottle] = []
            from bot_bottle.contracts.provider import GUEST_CA_PATH

            ca_file = run_dir / "ca" / "bot-bottle-ca.crt"
            ca_in: list[bool] = []

            def start_agent() -> tuple[Any, Any]:
                use = _use_gvisor(plan)
                runtime = gvisor_runtime(client, bundle_tag, self.progress) if use else None
                agent_env = {k: v.reveal() for k, v in plan.agent_env.items()}
                volumes = self._agent_volumes(plan, workspace, guarded, record, state, down)
                # Before the agent's container exists: nothing of the agent's
                # runs until the tree is the agent uid's. (Not for a root-owned
                # tree, read-only to the agent, nor an owner who is uid 60105.)
                if (
                    workspace is not None
                    and record is not None
                    and record.owner_uid not in (0, tree_owner.AGENT_UID)
                ):
                    keep, skip = workspace_tree.layout(workspace, record.guarded_ro)
                    trusted = worktree_guards.trusted_everywhere(
                        plan.cwd or Path(record.cwd),
                        workspace.host_git,
                        bring_back.Owner(record.owner_uid, record.owner_gid),
                    )
                    if trusted:
                        self.progress(
                            f"warning: your git config trusts {visible(', '.join(trusted))} "
                            "(safe.directory): there git does not check who owns a "
                            "repository, so a git directory the agent makes in "
                            f"{visible(record.cwd)} runs its config for your git inside it "
                            "until the bottle ends"
                        )
                    if workspace_tree.hand_over(client, record, state.path, keep, skip):
                        self.progress(
                            f"{visible(record.cwd)} belongs to the agent's uid "
                            f"{tree_owner.AGENT_UID} while the bottle runs (you keep read and "
                            "write; your git refuses git directories the agent makes in it); "
                            "it is yours again at teardown"
                        )
                    else:
                        self.progress(
                            f"warning: {visible(record.cwd)} has no POSIX ACLs: the agent "
                            "writes it as its owner, so a git directory it makes there is "
                            "live for your git run inside it while the bottle runs"
                        )
                agent = client.containers.create(
                    agent_tag,
                    command=["sleep", "infinity"],
                    name=prepared.agent_name,
                    hostname=plan.slug[:63],
                    network_mode="none",
                    environment=agent_env,
                    volumes=volumes or None,
                    working_dir=prepared.workdir,
                    labels={**labels, L_ROLE: "agent"},
                    **cgroup_limits(plan.resources.agent),
                    runtime=runtime,
                    init=True,
                    # Root's "sleep infinity" keeps the container up; the agent
                    # runs through exec as its own user. With an image whose
                    # USER is not root, Docker gives root execs no capabilities
                    # (no chown, no runuser), so provisioning could not work;
                    # root here gets only what provisioning needs.
                    user="root",
                    cap_drop=["ALL"],
                    cap_add=list(AGENT_ROOT_CAPS),
                    security_opt=["no-new-privileges", seccomp_opt()],
                    detach=True,
                )
                # A preserved bottle's agent is stopped, not removed (commit/resume).
                down.push(
                    f"container {prepared.agent_name}",
                    lambda: (
                        _stop(agent)
                        if kept and kept[0].kept
                        else agent.id in removed or _remove(agent)
                    ),
                )
                # The CA the agent trusts, in place before anything of the
                # agent's runs; unpacked into the created container, as the
                # engine allows, so the copy overlaps the bundle's boot.
                ca_in.append(_put_file(agent, ca_file, GUEST_CA_PATH, 0o644))
                agent.start()
                if workspace is not None and record is not None:
                    # Runs while the agent container still exists (teardown is LIFO).
                    ws, rec = workspace, record
                    secrets = list(plan.gitgate_secrets.values())
                    down.push(
                        "bring back the agent's commits",
                        lambda: self._bring_back(ws, rec, state.path, secrets),
                    )
                relay = self._start_relay(
                    client, prepared, labels, bundle_tag, agent, sock, down, removed=removed
                )
                return agent, relay

            # The bundle (slowest to boot: mitmproxy, MCP) and the agent side
            # start in parallel. Both threads register each resource's
            # teardown as it appears; the pool is joined before any teardown
            # runs (also on Ctrl-C), so nothing is created after it.
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bb-launch") as pool:
                fut_bundle = pool.submit(start_bundle)
                fut_agent = pool.submit(start_agent)
                try:
                    agent, relay = fut_agent.result()
                    bundle = fut_bundle.result()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            timings["containers"] = time.monotonic() - t

            bottle = DockerRunningBottle(
                plan.slug,
                agent,
                user=plan.provider_plan.user,
                workdir=prepared.workdir,
                wait_ready=lambda: self._wait_ready(sock, bundle, relay),
                timings=timings,
            )
            kept.append(bottle)
            # Pushed last, so it runs first: every container that nothing
            # still needs goes at once (each removal is a SIGKILL and an
            # engine round trip of 0.1-0.3 s); the steps above then find
            # them gone. The agent stays for the bring-back and for resume.
            drop = _NetworkDrop(network, bundle.id, removed)
            down.push(
                "containers",
                lambda: _remove_together(
                    [relay, bundle] + ([agent] if workspace is None and not bottle.kept else []),
                    removed,
                    # The network is left once the bundle is unplugged from
                    # it, while the bundle goes; or else once the bundle has.
                    after={bundle.id: drop.after_bundle},
                    also=[drop.early],
                ),
            )
            if not all(ca_in):
                # The image lacks the CA's directory: made by an exec.
                bottle.copy_in(ca_file, GUEST_CA_PATH, mode=0o644)
            if plan.cwd is not None:
                self._match_workspace_owner(bottle, plan.provider_plan.user, record)
            yield bottle
        log.debug("teardown", slug=plan.slug, seconds=round(down.seconds, 3))

    def _agent_volumes(
        self,
        plan: BottlePlan,
        workspace: workspace_git.WorkspaceGit | None,
        guarded: Sequence[tuple[Path, str, str]],
        record: workspace_tree.TreeRecord | None,
        state: StateDir,
        down: Teardown,
    ) -> dict[str, dict[str, str]]:
        """The agent's mounts: ``--cwd`` with its git guards (none without
        it); registers what undoes them once the agent container is gone."""
        volumes: dict[str, dict[str, str]] = {}
        if plan.cwd is not None and workspace is not None:
            volumes[str(plan.cwd)] = {"bind": WORKSPACE, "mode": "rw"}
            volumes.update(workspace.volumes())
            for src, dest, mode in guarded:
                volumes[str(src)] = {"bind": dest, "mode": mode}
            volumes = _one_mount_per_target(volumes)
            if workspace.created_mountpoint:
                # The engine creates /workspace/.git on the host for the mount.
                down.push("workspace .git mountpoint", workspace.remove_mountpoint)
            # Pushed before the container: runs once it is gone.
            if record is not None:
                rec = record
                down.push(
                    "disarm git dirs the agent left, hand the tree back",
                    lambda: self._finish_tree(rec, state.path),
                )
        return volumes

    def _start_relay(
        self,
        client: docker.DockerClient,
        prepared: DockerPrepared,
        labels: Mapping[str, str],
        bundle_tag: str,
        agent: Any,
        sock: Path,
        down: Teardown,
        *,
        removed: set[str] | None = None,
    ) -> Any:
        """The agent-side relay: in the agent's network namespace only,
        serving its loopback endpoints from the bundle's sockets."""
        plan = prepared.plan
        relay_user = DAEMON_USERS["relay"]
        relay = client.containers.create(
            bundle_tag,
            entrypoint=agent_relay_argv(plan),
            command=[],
            name=prepared.relay_name,
            network_mode=f"container:{agent.id}",
            volumes={str(sock): {"bind": SOCK_DIR, "mode": "rw"}},
            labels={**labels, L_ROLE: "relay"},
            **cgroup_limits(plan.resources.relay),
            # The same user as the bundle's relay daemon, which owns
            # the sockets; no capability (its ports are above 1024).
            user=f"{relay_user.uid}:{relay_user.uid}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", seccomp_opt()],
            detach=True,
        )
        gone = removed if removed is not None else set()
        down.push(f"container {prepared.relay_name}", lambda: relay.id in gone or _remove(relay))
        relay.start()
        return relay

    def _start_bundle(
        self,
        client: docker.DockerClient,
        prepared: DockerPrepared,
        labels: Mapping[str, str],
        bundle_tag: str,
        mounts: tuple[Path, Path, Path, Path],
        down: Teardown,
        *,
        removed: set[str] | None = None,
        network: Any | None = None,
    ) -> Any:
        """The sidecar bundle on the egress network (made here unless
        ``network`` is given), started. ``mounts`` is (run dir, deploy keys,
        supervise queue, logs); ``removed``: ids a parallel teardown step
        already removed."""
        plan = prepared.plan
        run_dir, keys_dir, queue, logs_dir = mounts
        gone = removed if removed is not None else set()
        if network is None:
            self._create_network(client, prepared, labels, down, gone)
        bundle = client.containers.create(
            bundle_tag,
            name=prepared.bundle_name,
            network=prepared.network,
            extra_hosts=bundle_hosts(plan),
            environment={k: v.reveal() for k, v in plan.bundle_env().items()},
            volumes={
                str(run_dir / "etc"): {"bind": ETC, "mode": "ro"},
                # Under a root-only directory: init copies them for
                # egress and git-gate into the tmpfs mounts below.
                str(run_dir / "ca"): {"bind": SECRETS_CA, "mode": "ro"},
                str(keys_dir): {"bind": SECRETS_GATE_KEYS, "mode": "ro"},
                str(queue): {"bind": QUEUE_DIR, "mode": "rw"},
                # init (root) alone writes here; the agent never mounts it.
                str(logs_dir): {"bind": LOG_DIR, "mode": "rw"},
                # The operator's git-gate overrides: the host writes, git-gate reads.
                str(run_dir / "gate-allow"): {"bind": GATE_ALLOW_DIR, "mode": "ro"},
                str(run_dir / "sock"): {"bind": SOCK_DIR, "mode": "rw"},
            },
            tmpfs={CA_DIR: PRIVATE_TMPFS, GATE_KEYS: PRIVATE_TMPFS},
            labels={**labels, L_ROLE: "sidecars"},
            **cgroup_limits(plan.resources.bundle),
            cap_drop=["ALL"],
            cap_add=BUNDLE_CAPS,
            security_opt=["no-new-privileges"],
            detach=True,
        )
        down.push(f"container {prepared.bundle_name}", lambda: bundle.id in gone or _remove(bundle))
        bundle.start()
        return bundle

    def _create_network(
        self,
        client: docker.DockerClient,
        prepared: DockerPrepared,
        labels: Mapping[str, str],
        down: Teardown,
        removed: set[str],
    ) -> Any:
        """The bottle's egress network (the bundle's only one); removed at
        teardown unless a parallel step (``removed``) took it first."""
        network = client.networks.create(
            prepared.network, driver="bridge", labels={**labels, L_ROLE: "egress-network"}
        )
        down.push(f"network {prepared.network}", lambda: network.id in removed or network.remove())
        return network

    def _prepare_workspace(
        self, plan: BottlePlan, state: StateDir
    ) -> tuple[workspace_git.WorkspaceGit | None, dict[str, str], list[tuple[Path, str, str]]]:
        """The ``--cwd`` mount's git side (bottle-owned git dir, guards), with
        what the operator must know about it; nothing without ``--cwd``."""
        workspace = None
        git_dirs_at_launch: dict[str, str] = {}
        guarded: list[tuple[Path, str, str]] = []
        if plan.cwd is not None:
            workspace = workspace_git.prepare(plan.cwd, state.path, plan.slug)
            if workspace.config_guarded:
                names = ", ".join(visible(n) for n in workspace.config_guarded[:10])
                self.progress(f"read-only in the bottle (your git config runs them): {names}")
            if workspace.host_git is None:
                self.progress(
                    "the --cwd directory is not a git repository: the agent's commits "
                    "stay in the bottle and are discarded with it"
                )
            git_dirs_at_launch = nested_git.git_dirs(plan.cwd)
            if workspace.host_git is not None and workspace.host_owner is not None:
                guarded = worktree_guards.guards(plan.cwd, workspace.host_git, workspace.host_owner)
                hooks = worktree_guards.active_hooks(
                    plan.cwd, workspace.host_git, workspace.host_owner
                )
                if hooks:
                    self.progress(
                        f"warning: {visible(str(plan.cwd))} has git hooks "
                        f"({', '.join(visible(h) for h in hooks[:8])}); files they read "
                        "from the working tree (a .pre-commit-config.yaml, a Makefile, "
                        "package.json scripts) are the agent's to change: review its "
                        "edits before you commit there"
                    )
        return workspace, git_dirs_at_launch, guarded

    def _stage_keys(self, plan: BottlePlan, keys_dir: Path, down: Teardown) -> None:
        """git-gate's deploy keys, staged for the bundle (the launch kit);
        provisioned ones are revoked at teardown."""
        if plan.gitgate is not None and plan.gitgate.enabled:
            from bot_bottle_sidecars.launch.keys import GateKeys

            keys = GateKeys(plan.gitgate, keys_dir, bottle_slug=plan.slug)
            down.push("git-gate keys", keys.close)  # revokes provisioned keys
            keys.stage()
        else:
            keys_dir.mkdir(mode=0o700, exist_ok=True)

    def _match_workspace_owner(
        self, bottle: DockerRunningBottle, user: str, record: workspace_tree.TreeRecord | None
    ) -> None:
        """Give the agent user the uid the mounted ``--cwd`` needs.

        The tree handed over (``tree_owner``): the agent is
        ``tree_owner.AGENT_UID`` with the owner's group, and its git takes any
        directory for safe (the tree is no longer its owner's). Otherwise (no
        ACLs) the agent takes the owner's uid, so it can write the files as
        their owner. Renumbering the user in this container is safe: no agent
        process runs yet (the container's own process is root's). A
        root-owned workspace is not mapped: the agent never runs as root, so
        it stays read-only, and the operator is told.
        """
        probe = bottle.exec(["sh", "-c", 'stat -c "%u %g" "$1"; id -u "$2"', "sh", WORKSPACE, user],
                            user="root")  # fmt: skip
        lines = probe.stdout.decode().split("\n") if probe.ok else []
        if len(lines) < 2:
            raise BotBottleError(
                f"cannot inspect {WORKSPACE} in the bottle: {probe.stderr[-200:]!r}"
            )
        uid, gid = (int(x) for x in lines[0].split())
        if record is not None and record.handed_over:
            uid, gid = tree_owner.AGENT_UID, record.owner_gid
            # Its own git is the agent's business: the directories it works
            # in are not its own uid's everywhere (the top, submodules).
            gitconfig = "printf '[safe]\\n\\tdirectory = *\\n' >> /etc/gitconfig"
            cfg = bottle.exec(["sh", "-c", gitconfig], user="root")
            if not cfg.ok:
                raise BotBottleError(
                    f"cannot write /etc/gitconfig in the bottle: {cfg.stderr[-200:]!r}"
                )
        if uid != 0:
            # The bottle's git dir (written by bot-bottle) becomes the agent's.
            own = bottle.exec(["chown", "-R", f"{uid}:{gid}", f"{WORKSPACE}/.git"], user="root")
            if not own.ok:
                raise BotBottleError(
                    f"cannot hand {WORKSPACE}/.git to the agent: "
                    f"{own.stderr.decode(errors='replace')[-300:]}"
                )
        if uid == int(lines[1]):
            return
        if uid == 0:
            self.progress(
                f"warning: the --cwd directory is owned by root: the agent ({user}) can read "
                f"{WORKSPACE} but not write it; use a directory a normal user owns"
            )
            return
        script = (
            'usermod -o -u "$1" "$3" && groupmod -o -g "$2" "$(id -gn "$3")" '
            '&& chown -R "$1:$2" "$(getent passwd "$3" | cut -d: -f6)"'
        )
        result = bottle.exec(["sh", "-c", script, "sh", str(uid), str(gid), user], user="root")
        if not result.ok:
            raise BotBottleError(
                f"cannot give the agent user the workspace owner's uid {uid}: "
                f"{result.stderr.decode(errors='replace')[-300:]}",
                hint="the agent image needs usermod/groupmod (Debian's passwd package)",
            )

    def _finish_tree(self, record: workspace_tree.TreeRecord, state_path: Path) -> None:
        client = _client()
        try:
            workspace_tree.finish(client, record, state_path, self.progress)
        finally:
            client.close()

    def _tree_record(
        self,
        plan: BottlePlan,
        state: StateDir,
        workspace: workspace_git.WorkspaceGit | None,
        guarded: Sequence[tuple[Path, str, str]],
        at_launch: dict[str, str],
        image: str,
        container: str,
    ) -> workspace_tree.TreeRecord | None:
        """What the end of the bottle needs, in the state dir before the
        tree changes hands (``cleanup`` finishes a bottle whose launcher died)."""
        if plan.cwd is None or workspace is None:
            return None
        uid, gid = workspace_tree.owner_of(plan.cwd)
        ro = [d for _s, d, m in [*workspace.mounts, *guarded] if m == "ro"]
        record = workspace_tree.TreeRecord(
            slug=plan.slug, cwd=str(plan.cwd), owner_uid=uid, owner_gid=gid, image=image,
            container=container, user=plan.provider_plan.user, git_dir=str(workspace.git_dir),
            host_git=str(workspace.host_git) if workspace.host_git else None,
            launch_tips=dict(workspace.launch_tips),
            created_mountpoint=workspace.created_mountpoint,
            nested_at_launch=sorted(workspace.nested_at_launch), at_launch=dict(at_launch),
            scan_protected=[d.removeprefix(f"{WORKSPACE}/") for _s, d, m in guarded if m == "ro"],
            guarded_ro=sorted({d.removeprefix(f"{WORKSPACE}/") for d in ro
                               if d.startswith(f"{WORKSPACE}/")}),
        )  # fmt: skip
        record.save(state.path)
        return record

    def _bring_back(
        self,
        ws: workspace_git.WorkspaceGit,
        record: workspace_tree.TreeRecord,
        state_path: Path,
        secrets: Sequence[object] = (),
    ) -> None:
        """The agent's branches into the host repository (scanned), then the
        bottle's git dir back to the operator so the state dir can go.
        ``secrets``: the bottle's known secret values (none in ``cleanup``)."""
        import docker.errors

        if "brought_back" in record.done:
            return
        container, user = record.container, record.user

        where = visible(str(ws.cwd))
        nested = workspace_git.new_nested_git(ws)
        if nested:
            names = ", ".join(visible(n) for n in nested[:10])
            self.progress(
                f"warning: the agent created nested git directories in {where}: {names} "
                "(their config runs code if you make them submodules; review or delete them)"
            )
        try:
            result = bring_back.bring_back(
                ws,
                ["docker", "exec", "-i", "-u", user, container],
                _guarded_scanner(bring_back.default_scanner(secrets), record.scan_protected),
                ws.git_dir.parent / "bring-back.git",
            )
        except BotBottleError as exc:
            self.progress(f"warning: the agent's commits were not brought back: {exc}")
            raise
        finally:
            with contextlib.suppress(docker.errors.DockerException, BotBottleError):
                agent = _client().containers.get(container)
                agent.exec_run(
                    ["chown", "-R", f"{os.getuid()}:{os.getgid()}", f"{WORKSPACE}/.git"],
                    user="root",
                )
        if result.over_cap:
            self.progress(
                f"error: nothing was brought back into {where}: {result.error} "
                "(hint: set BOT_BOTTLE_BRING_BACK_MAX_MB higher, or have the agent push "
                "through git-gate)"
            )
        elif result.error:
            self.progress(f"warning: the agent's commits could not be fetched: {result.error}")
        for item in result.items:
            what = "refused, not brought into" if item.refused else "brought back into"
            self.progress(f"{what} {where}: {item.line()}")
        record.done.append("brought_back")
        record.save(state_path)
        log.info("brought_back", slug=record.slug, refs=[i.ref for i in result.items if i.ref],
                 refused=[i.branch for i in result.items if i.refused])  # fmt: skip

    def _ensure_agent_image(self, plan: BottlePlan, engine: DockerCLI | None = None) -> str:
        from bot_bottle_docker.images import ensure_agent_image

        return ensure_agent_image(plan.agent_image_spec, progress=self.progress, docker=engine).tag

    def _ensure_bundle_image(self, engine: DockerCLI | None = None) -> str:
        from bot_bottle_docker.images import ensure_bundle_image

        return ensure_bundle_image(progress=self.progress, docker=engine).tag

    def _write_files(self, plan: BottlePlan, etc: Path, sock: Path, queue: Path) -> None:
        """The bundle's files. etc/ holds no secret and every daemon reads it
        (0755/0644; the state dir around it is 0700, so the host path stays
        private); the CA (written next to etc/) and the staged keys stay
        0700/0600, reachable in the bundle by init alone. The two read-write
        directories get an ACL entry for the one daemon user that writes
        them (hostperms)."""
        from bot_bottle_sidecars.launch.ca import generate_bottle_ca
        from bot_bottle_sidecars.launch.files import write_etc

        for d in (etc, sock, queue):
            d.mkdir(parents=True, mode=0o700, exist_ok=True)
        write_etc(plan, etc)
        _world_readable(etc)
        # git-gate's user reads the allow list (finding ids, no secret).
        (etc.parent / "gate-allow").mkdir(mode=0o755, exist_ok=True)
        (etc.parent / "gate-allow").chmod(0o755)
        users = shared_dir_users()
        for path, target in ((sock, SOCK_DIR), (queue, QUEUE_DIR)):
            user = users[target]
            how = grant_dir(path, user.uid, user.uid)
            log.debug("shared_dir", path=str(path), user=user.name, how=how)
        generate_bottle_ca(etc.parent / "ca", name=f"bot-bottle {plan.slug}")

    def _wait_ready(self, sock: Path, bundle: Any, relay: Any) -> None:
        start = time.monotonic()
        deadline = start + READY_TIMEOUT
        want = [sock / BUNDLE_READY, sock / AGENT_READY]
        # Two stat calls per look: cheap enough to look often (a ready file
        # is seen within 20 ms, not up to 250 ms later); the engine is asked
        # about the containers twice a second once the boot takes a while.
        next_check = start + 0.5
        while not all(p.exists() for p in want):
            now = time.monotonic()
            if now > deadline:
                raise BotBottleError(
                    "the sidecars did not become ready within "
                    f"{READY_TIMEOUT:.0f} s: {_tail(bundle)}",
                    hint=f"see 'docker logs {bundle.name}' while the bottle runs",
                )
            if now >= next_check:
                next_check = now + 0.5
                for c in (bundle, relay):
                    c.reload()
                    if c.status == "exited":
                        raise BotBottleError(
                            f"container {c.name} exited during start: {_tail(c)}",
                            hint="rerun with -v for details",
                        )
            time.sleep(0.02)

    # -- enumeration -------------------------------------------------------------

    def list_active(self) -> list[ActiveBottle]:
        client = _client()
        try:
            by_slug: dict[str, list[Any]] = {}
            flt: dict[str, Any] = {"label": f"{L_BACKEND}={NAME}"}
            for c in client.containers.list(filters=flt):
                by_slug.setdefault(c.labels.get(L_SLUG, ""), []).append(c)
            out = []
            for slug, containers in sorted(by_slug.items()):
                agent = next((c for c in containers if c.labels.get(L_ROLE) == "agent"), None)
                if agent is None:
                    continue
                services = agent.labels.get(L_SERVICES, "")
                bundle = next((c for c in containers if c.labels.get(L_ROLE) == "sidecars"), None)
                out.append(
                    ActiveBottle(
                        backend=NAME,
                        slug=slug,
                        agent=agent.labels.get(L_AGENT, "?"),
                        label=agent.labels.get(L_LABEL) or None,
                        started_at=agent.labels.get(L_STARTED, ""),
                        services=tuple(s for s in services.split(",") if s),
                        daemons=_daemon_states(slug, agent.labels, bundle),
                    )
                )
            return out
        finally:
            client.close()

    def _container(self, client: Any, slug: str, role: str) -> Any | None:
        flt: dict[str, Any] = {
            "label": [f"{L_BACKEND}={NAME}", f"{L_SLUG}={slug}", f"{L_ROLE}={role}"]
        }
        found = client.containers.list(filters=flt)
        return found[0] if found else None

    def egress_control(self, slug: str) -> EgressControl | None:
        from bot_bottle_docker.egress_control import DockerEgressControl

        client = _client()
        bundle = self._container(client, slug, "sidecars")
        if bundle is None:
            client.close()
            return None
        # The control keeps the client (and its connection pool) as long as it lives.
        return DockerEgressControl(slug, bundle)

    def stop(self, slug: str) -> bool:
        # Stopping the agent ends the launcher's attach/run; the launcher then
        # tears down the rest (and keeps state on a non-zero exit).
        client = _client()
        try:
            agent = self._container(client, slug, "agent")
            if agent is None:
                return False
            agent.stop(timeout=10)
            return True
        finally:
            client.close()

    def find_orphans(self) -> list[CleanupItem]:
        """Labelled containers and networks whose launcher is gone.

        Of this home's bottles, one is owned while the process in its
        metadata.json is alive; with no state dir at all (SIGKILL after a
        crash that lost it) it is an orphan. Another home's (or another
        user's, on a shared engine) is left alone unless its launcher label
        names a process of this boot that has exited.
        """
        client = _client()
        ours = home_id()
        try:
            items: list[CleanupItem] = []
            flt: dict[str, Any] = {"label": f"{L_BACKEND}={NAME}"}
            for c in client.containers.list(all=True, filters=flt):
                labels = c.labels or {}
                if labels.get(L_HOME) != ours and _kept(labels, c.status):
                    continue
                if _orphaned(labels, ours):
                    slug = c.labels[L_SLUG]
                    items.append(CleanupItem(NAME, "container", c.name or c.id or "?", slug))
            for n in client.networks.list(filters=flt):
                labels = n.attrs.get("Labels") or {}
                if _orphaned(labels, ours):
                    items.append(
                        CleanupItem(NAME, "network", n.name or n.id or "?", labels[L_SLUG])
                    )
            # A --cwd tree a dead launcher did not give back (still the agent
            # uid's, its git dirs armed, the agent's commits not fetched).
            for state in all_states():
                record = workspace_tree.unfinished(state.path)
                if record is not None and not state.owner_alive:
                    items.append(CleanupItem(NAME, "workspace", visible(record.cwd), state.slug))
            return items
        finally:
            client.close()

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        """Remove ``items``; then, for their bottles, whatever appeared meanwhile.

        A launcher killed in the middle of an engine call leaves that call
        running in the engine: a container it was creating or starting can
        appear (or refuse removal: "in progress") after the orphans were
        listed. Each removal is retried briefly, and each orphaned bottle's
        label is looked up again until a pass finds nothing new.
        """
        client = _client()
        removed: list[CleanupItem] = []
        slugs = {i.slug for i in items if i.slug}
        try:
            for slug in sorted(slugs):
                self._finish_orphan(client, slug)
            pending = [i for i in items if i.kind != "workspace"]
            trees = [i for i in items if i.kind == "workspace"]
            removed += [i for i in trees if not self._unfinished(i.slug or "")]
            for attempt in range(_CLEANUP_PASSES):
                # Containers first: a network in use cannot be removed.
                for item in sorted(pending, key=lambda i: i.kind != "container"):
                    if self._remove_item(client, item):
                        removed.append(item)
                if not slugs:
                    break
                time.sleep(_CLEANUP_SETTLE * (attempt + 1))
                done = {(i.kind, i.name) for i in removed}
                pending = [i for i in self._labelled(client, slugs) if (i.kind, i.name) not in done]
                if not pending:
                    break
        finally:
            client.close()
        # Only what was asked for counts; late arrivals are extra.
        asked = {(i.kind, i.name) for i in items}
        return [i for i in removed if (i.kind, i.name) in asked]

    @staticmethod
    def _unfinished(slug: str) -> bool:
        return workspace_tree.unfinished(StateDir.for_slug(slug).path) is not None

    def _finish_orphan(self, client: Any, slug: str) -> None:
        """What a dead launcher's teardown did not do for its ``--cwd``: the
        agent's commits brought back (while its container still runs), the
        container gone, then the git dirs it left disarmed and the tree
        handed back. The bottle's known secret values are not kept on disk,
        so this scan has the installed detectors only."""
        import docker.errors

        state = StateDir.for_slug(slug)
        record = workspace_tree.unfinished(state.path)
        if record is None or state.owner_alive:
            return
        agent = None
        with contextlib.suppress(docker.errors.NotFound):
            agent = client.containers.get(record.container)
        if agent is not None and agent.status == "running":
            try:
                self._bring_back(record.workspace(), record, state.path)
            except BotBottleError as exc:
                log.warning("cleanup_bring_back_failed", slug=slug, error=str(exc))
        if agent is not None and not state.preserved:
            # (a preserved bottle's agent is stopped, kept for commit/resume)
            with contextlib.suppress(docker.errors.NotFound):
                agent.remove(force=True, v=True)
        try:
            workspace_tree.finish(client, record, state.path, self.progress)
        except BotBottleError as exc:
            log.warning("cleanup_tree_failed", slug=slug, error=str(exc))
        if record.created_mountpoint:
            record.workspace_with_mountpoint().remove_mountpoint()

    def _labelled(self, client: Any, slugs: set[str]) -> list[CleanupItem]:
        out: list[CleanupItem] = []
        ours = home_id()
        for slug in sorted(slugs):
            flt: dict[str, Any] = {"label": [f"{L_BACKEND}={NAME}", f"{L_SLUG}={slug}"]}
            for c in client.containers.list(all=True, filters=flt):
                labels = c.labels or {}
                # The same judgement as find_orphans: a preserved bottle's
                # stopped agent (kept for resume) is not a late arrival.
                if (labels.get(L_HOME) != ours and _kept(labels, c.status)) or not _orphaned(
                    labels, ours
                ):
                    continue
                out.append(CleanupItem(NAME, "container", c.name or c.id or "?", slug))
            for n in client.networks.list(filters=flt):
                out.append(CleanupItem(NAME, "network", n.name or n.id or "?", slug))
        return out

    def _remove_item(self, client: Any, item: CleanupItem) -> bool:
        import docker.errors

        for attempt in range(_REMOVE_TRIES):
            try:
                if item.kind == "container":
                    client.containers.get(item.name).remove(force=True)
                elif item.kind == "network":
                    client.networks.get(item.name).remove()
                else:
                    return False
                return True
            except docker.errors.NotFound:
                return True
            except docker.errors.APIError as exc:
                # 409: removal already in progress, or a network still in use
                # by a container being removed: worth another look.
                if exc.status_code == 409 and attempt + 1 < _REMOVE_TRIES:
                    time.sleep(0.3)
                    continue
                log.warning("cleanup_failed", item=item.name, error=str(exc))
                return False
        return False


def _daemon_states(slug: str, labels: Mapping[str, str], bundle: Any) -> tuple[DaemonState, ...]:
    """What the bundle's init last wrote (this home's bottles only: another
    home's state dir is not ours to read). A bundle container that is not
    running (only running ones are listed) says so, whatever the file claims."""
    if labels.get(L_HOME) != home_id():
        return ()
    if bundle is None:
        return (DaemonState("bundle", "stopped"),)
    path = StateDir.for_slug(slug).run_dir / "sock" / INIT_STATUS
    try:
        data = json.loads(path.read_text())
        return tuple(
            DaemonState(
                name=str(d["name"]),
                state=str(d["state"]),
                crashes=int(d.get("crashes") or 0),
                last_exit=d.get("last_exit"),
            )
            for d in data["daemons"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def cgroup_limits(limits: Limits) -> dict[str, Any]:
    """``containers.create`` keywords for a manifest ``resources:`` entry.

    Swap is the memory limit itself (no swap on top): a container over its
    limit is OOM-killed inside, instead of thrashing the host's disk.
    """
    out: dict[str, Any] = {}
    if limits.memory is not None:
        out["mem_limit"] = out["memswap_limit"] = memory_bytes(limits.memory)
    if limits.pids is not None:
        out["pids_limit"] = limits.pids
    if limits.cpus is not None:
        out["nano_cpus"] = int(limits.cpus * 1e9)
    return out


def _use_gvisor(plan: BottlePlan) -> bool:
    """The ``gvisor`` backend option (``--no-gvisor`` turns it off); on by default."""
    return bool(plan.backend_options.get("gvisor", True))


def _gvisor_doctor(info: Any) -> str:
    from bot_bottle_docker import gvisor

    if gvisor.RUNTIME not in info.runtimes:
        return (
            "off (runsc is not registered with the engine; scripts/setup.sh says why it "
            "is not registered on these machines)"
        )
    client = _client()
    try:
        images = client.images.list(name="bot-bottle/sidecars")
        if not images:
            return "runsc registered; not probed yet (no bundle image built)"
        state = gvisor.probe(client, images[0].tags[0])
        return ("on: " if state.usable else "runsc registered but not used: ") + state.detail
    finally:
        client.close()


def _world_readable(root: Path) -> None:
    # Whatever the host user's umask: the daemons' uids are not the owner's.
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _stderr_progress(line: str) -> None:
    sys.stderr.write(f"  {visible(line)}\n")


def _orphaned(labels: Mapping[str, str], ours: str) -> bool:
    slug = labels.get(L_SLUG)
    if not slug:
        return False
    if labels.get(L_HOME) == ours:
        return not _owned(slug, labels.get(L_ROLE))
    return launcher_gone(labels.get(L_LAUNCHER, ""))


def _kept(labels: Mapping[str, str], status: str) -> bool:
    """A stopped agent is one a preserved bottle kept for resume (a crashed
    launch leaves its agent running ``sleep infinity``); another home's
    cannot be judged from here, so it is left alone."""
    return labels.get(L_ROLE) == "agent" and status == "exited"


def _owned(slug: str, role: str | None = None) -> bool:
    state = StateDir.for_slug(slug)
    if role == "agent" and state.preserved:
        return True  # kept stopped for commit/resume; 'snapshots'/'resume' release it
    return state.path.exists() and state.owner_alive


def _remove(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


def _remove_together(
    containers: Sequence[Any],
    removed: set[str],
    after: Mapping[str, Callable[[], None]] | None = None,
    also: Sequence[Callable[[], None]] = (),
) -> None:
    """Remove ``containers`` in parallel; ``removed`` gets the ids that went,
    so their own teardown steps skip them (a failure leaves its step to retry).
    ``after``: container id -> what to do once that container is gone;
    ``also``: more to do at the same time."""

    def one(container: Any) -> None:
        _remove(container)
        removed.add(container.id)
        then = (after or {}).get(container.id)
        if then is not None:
            then()

    jobs = [*(partial(one, c) for c in containers), *also]
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="bb-down") as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.exception()


class _NetworkDrop:
    """The egress network's removal at teardown, off the bundle's: the
    engine refuses to remove a network with a container on it, and removing
    the bundle first, then the network, took 0.4-0.5 s one after the other.
    :meth:`early` unplugs the bundle and removes the network while the
    bundle's removal runs; if it loses that race (the bundle went first),
    :meth:`after_bundle` removes it once the bundle is gone. A failure of
    both leaves the network's own teardown step (and ``cleanup``) to it."""

    def __init__(self, network: Any, bundle_id: str, removed: set[str]) -> None:
        self.network, self.bundle_id, self.removed = network, bundle_id, removed
        self._lock = threading.Lock()

    def early(self) -> None:
        self._drop(unplug=True)

    def after_bundle(self) -> None:
        self._drop(unplug=False)

    def _drop(self, *, unplug: bool) -> None:
        import docker.errors

        with self._lock:
            if self.network.id in self.removed:
                return
            if unplug:
                # The bundle may be gone already (its endpoint with it).
                with contextlib.suppress(docker.errors.APIError):
                    self.network.disconnect(self.bundle_id, force=True)
            try:
                self.network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                if unplug:
                    return  # still in use: after_bundle retries
                raise
            self.removed.add(self.network.id)


def _put_file(container: Any, src: Path, dest: str, mode: int) -> bool:
    """``src`` at ``dest`` (root's, ``mode``) in ``container``, started or
    not; False when ``dest``'s directory does not exist there."""
    import docker.errors

    data, _applied = copy_in_tar(src, dest, mode)
    try:
        return bool(container.put_archive(str(PurePosixPath(dest).parent), data))
    except docker.errors.NotFound:
        return False


def _stop(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        container.stop(timeout=2)


def _tail(container: Any, lines: int = 8) -> str:
    try:
        text = container.logs(tail=lines).decode("utf-8", "replace")
    except Exception:
        return "(no logs)"
    return " | ".join(line for line in text.splitlines() if line.strip())[-800:]


__all__ = ["DockerBackend", "DockerPrepared", "gvisor_runtime"]


def _one_mount_per_target(volumes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Two guard passes (submodule/config guards and working-tree guards) may
    name one target through different host spellings of the same path (a
    ``--cwd`` reached through a link); the engine refuses a duplicate mount
    point, and of two modes read-only is the one that protects."""
    by_target: dict[str, tuple[str, dict[str, str]]] = {}
    for src, spec in volumes.items():
        seen = by_target.get(spec["bind"])
        if seen is None or (spec["mode"] == "ro" and seen[1]["mode"] != "ro"):
            by_target[spec["bind"]] = (src, spec)
    return dict(by_target.values())


def _guarded_scanner(scan: bring_back.Scanner, protected: Sequence[str]) -> bring_back.Scanner:
    """git-gate's scan, then what the working tree's guards protect: a branch
    that changes a guarded path or lays a directory out as a git dir would
    run the agent's code when the operator checks it out."""

    def scanner(repo: Path, tip: str, branch: str) -> tuple[int, list[str]]:
        commits, problems = scan(repo, tip, branch)
        return commits, [*problems, *worktree_guards.branch_problems(repo, tip, protected)]

    return scanner
