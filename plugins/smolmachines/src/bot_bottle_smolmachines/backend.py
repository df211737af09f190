"""The smolmachines backend: the agent in a libkrun micro-VM, the sidecars in Docker.

Network design. The agent VM is created with ``--allow-cidr <alias>/32`` and
``--dns <alias>``: the only address it may reach is the bottle's own loopback
alias (a per-bottle ``127.77.x.y``, :func:`loopback_alias`), where a relay
container (the bundle image's relay, ``network_mode=host``) listens on the
bottle's endpoints and forwards them to the bundle's Unix sockets, exactly
as the Docker backend's agent-side relay does. DNS goes to the alias too,
where nothing answers: no lookup leaves the bottle. The alias follows from
the slug, so :meth:`SmolmachinesBackend.agent_endpoint_host` names it at
planning time and core writes it into every agent-side URL (proxy
variables, git-gate's ``insteadOf`` rewrites, the MCP URL).

smolvm 1.32 refuses any egress policy together with ``--net-backend tsi``
("TSI does not enforce it"), so the allow list is left to smolvm's default
(virtio-net) host stack; the first system's TSI-only allow list was dropped
upstream. How a virtio-net guest addresses the host's loopback alias was not
verified (no guest boots on the machines this was written on: see README).

The sidecar bundle is the Docker backend's (its image, files, deploy keys,
start and readiness wait), labelled with this backend's name so each
backend's ``list_active``/``cleanup`` sees only its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle.backend_kit import (
    L_AGENT,
    L_BACKEND,
    L_LABEL,
    L_ROLE,
    L_SERVICES,
    L_SLUG,
    L_STARTED,
    begin_history,
    bottle_labels,
)
from bot_bottle.contracts.backend import (
    ActiveBottle,
    Backend,
    BottlePlan,
    CleanupItem,
    PreparedBottle,
    RunningBottle,
)
from bot_bottle.contracts.common import Availability, HostCheck
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.state import StateDir, home_id, now_iso
from bot_bottle.teardown import Teardown
from bot_bottle_smolmachines.running import SmolmachinesRunningBottle
from bot_bottle_smolmachines.smolvm import CreateSpec, Smolvm, SmolvmError, find_smolvm

NAME = "smolmachines"
#: The agent user (the freezer stops its processes while it reads the VM).
L_USER = "bot-bottle.user"

log = get_logger("bot_bottle_smolmachines")


def loopback_alias(slug: str) -> str:
    """The bottle's own loopback address, ``127.77.x.y`` (y in 1..254), from
    its slug: away from 127.0.0.1 and resolvers' 127.0.0.53. On Linux all of
    127/8 is local; macOS needs ``ifconfig lo0 alias`` (README)."""
    digest = hashlib.sha256(slug.encode()).digest()
    return f"127.77.{digest[0]}.{1 + digest[1] % 254}"


def kvm_check() -> str | None:
    """Why no guest can boot on this host, or None when it can (as far as
    a look without booting tells)."""
    if platform.system() == "Darwin":
        return None  # Hypervisor.framework
    if platform.system() != "Linux":
        return f"{platform.system()} hosts are not supported by this backend"
    if not Path("/dev/kvm").exists():
        return "/dev/kvm is missing (no KVM)"
    if Path("/sys/module/kvm_pvm").exists():
        return (
            "/dev/kvm is kvm_pvm (no hardware virtualization): libkrun guests do not "
            "boot (smolvm: 'no boot progress for 30 seconds')"
        )
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "cannot read /proc/cpuinfo"
    flags = {w for line in cpuinfo.splitlines() if line.startswith("flags") for w in line.split()}
    if not flags & {"vmx", "svm"}:
        return "the CPU has no vmx/svm flag: KVM cannot boot a guest here"
    return None


@dataclass(frozen=True)
class SmolPrepared(PreparedBottle):
    machine: str = ""
    alias: str = ""
    network: str = ""
    bundle_name: str = ""
    relay_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "loopback_alias": self.alias,
            "agent_network": f"--allow-cidr {self.alias}/32, --dns {self.alias}",
            "containers": [self.bundle_name, self.relay_name],
            "services": list(self.services),
            "workdir": self.workdir,
        }


class SmolmachinesBackend(Backend):
    name = NAME
    description = "libkrun micro-VM (smolvm CLI), sidecar bundle in Docker"

    def __init__(
        self,
        *,
        kvm: Callable[[], str | None] = kvm_check,
        sidecars: Any | None = None,
    ) -> None:
        self._kvm = kvm
        self._sidecars = sidecars
        self.progress: Callable[[str], None] = _stderr_progress

    # -- availability --------------------------------------------------------------

    def _unavailable(self) -> Availability | None:
        if find_smolvm() is None:
            return Availability.no(
                "the smolvm CLI is not installed",
                "pip install smolmachines (the 'smolvm' command), or set BOT_BOTTLE_SMOLVM",
            )
        why = self._kvm()
        if why is not None:
            return Availability.no(
                f"no bootable KVM: {why}",
                "run on a host with hardware virtualization (vmx/svm) or macOS",
            )
        return None

    def is_available(self) -> Availability:
        bad = self._unavailable()
        if bad is not None:
            return bad
        return Availability.yes(f"smolvm at {find_smolvm()}")

    def host_checks(self) -> list[HostCheck]:
        binary = find_smolvm()
        cli = (
            HostCheck("OK", "smolvm", f"smolvm at {binary}")
            if binary
            else HostCheck(
                "WARN", "smolvm", "the smolvm CLI is not installed", "pip install smolmachines"
            )
        )
        why = self._kvm()
        kvm = (
            HostCheck("OK", "kvm", "hardware virtualization present")
            if why is None
            else HostCheck(
                "WARN", "kvm", why, "a host with vmx/svm (or macOS) boots libkrun guests"
            )
        )
        return [cli, kvm]

    def agent_endpoint_host(self, slug: str) -> str:
        """The bottle's loopback alias: the VM's own 127.0.0.1 serves nothing;
        the relay listens on the alias, the one address the VM may reach."""
        return loopback_alias(slug)

    def preflight(self, plan: BottlePlan) -> dict[str, str]:
        return {
            "agent network": f"only {loopback_alias(plan.slug)} (--allow-cidr /32); "
            "DNS to the same alias (nothing answers)"
        }

    # -- prepare (pure) ------------------------------------------------------------

    def prepare(self, plan: BottlePlan) -> SmolPrepared:
        bad = self._unavailable()
        if bad is not None:
            raise BotBottleError(
                f"the smolmachines backend cannot run here: {bad.detail}", hint=bad.hint
            )
        if plan.cwd is not None:
            raise BotBottleError(
                "the smolmachines backend does not mount a workspace (--cwd) yet: the "
                "Docker backend's workspace git guards are not ported",
                hint="drop --cwd, or use --backend docker for a workspace",
            )
        alias = loopback_alias(plan.slug)
        if plan.agent_host != alias:
            # A plan made without this backend's agent_endpoint_host: its
            # URLs name an address the VM cannot reach.
            raise BotBottleError(
                f"the plan points the agent at {plan.agent_host}, not this bottle's "
                f"loopback alias {alias}",
                hint="plan the bottle with --backend smolmachines",
            )
        from bot_bottle_sidecars.layout import endpoints

        prefix = f"bb-{plan.slug}"
        labels = {**bottle_labels(plan, NAME, endpoints(plan)), L_USER: plan.provider_plan.user}
        return SmolPrepared(
            plan=plan,
            backend=NAME,
            workdir=plan.provider_plan.guest_home,
            machine=f"{prefix}-agent",
            alias=alias,
            network=f"{prefix}-egress",
            bundle_name=f"{prefix}-sidecars",
            relay_name=f"{prefix}-relay",
            labels=labels,
            services=tuple(endpoints(plan)),
            env={k: v.reveal() for k, v in plan.agent_env.items()},
        )

    # -- launch --------------------------------------------------------------------

    @contextlib.contextmanager
    def launch(self, prepared: PreparedBottle) -> Iterator[RunningBottle]:
        if not isinstance(prepared, SmolPrepared):
            raise BotBottleError("launch needs what SmolmachinesBackend.prepare returned")
        plan = prepared.plan
        cli = Smolvm.locate()  # before anything is created: a clear error, nothing to undo
        sidecars = self._sidecars or DockerSidecars(self.progress)
        timings: dict[str, float] = {}
        with Teardown(plan.slug) as down:
            t = time.monotonic()
            run_dir = StateDir.for_slug(plan.slug).run_dir
            run_dir.mkdir(parents=True, exist_ok=True)
            down.push("runtime files", lambda: shutil.rmtree(run_dir, ignore_errors=True))
            from bot_bottle_smolmachines.freezer import L_IMAGE, mark_argv

            tag = plan.agent_image or sidecars.agent_image(plan)
            image = sidecars.save_image(tag, run_dir / "agent-image.tar")
            timings["images"] = time.monotonic() - t

            t = time.monotonic()
            labels = {**prepared.labels, L_STARTED: now_iso()}
            kept: list[SmolmachinesRunningBottle] = []
            spec = CreateSpec(
                name=prepared.machine,
                image=str(image),
                labels={**labels, L_IMAGE: tag},
                allow_cidr=f"{prepared.alias}/32",
                dns=prepared.alias,
                env=prepared.env,
            )
            cli.create(spec)
            down.push(
                f"machine {prepared.machine}",
                lambda: None if kept and kept[0].kept else cli.delete(prepared.machine),
            )
            wait = sidecars.start(prepared, labels, run_dir, down)
            cli.start(prepared.machine)
            down.push(f"stop machine {prepared.machine}", lambda: _stop(cli, prepared.machine))
            timings["machine"] = time.monotonic() - t

            bottle = SmolmachinesRunningBottle(
                plan.slug,
                cli,
                prepared.machine,
                user=plan.provider_plan.user,
                home=plan.provider_plan.guest_home,
                wait_ready=wait,
                timings=timings,
            )
            kept.append(bottle)
            from bot_bottle.contracts.provider import GUEST_CA_PATH

            bottle.copy_in(
                run_dir / "ca" / "bot-bottle-ca.crt", GUEST_CA_PATH, mode=0o644, owner="root"
            )
            # The freezer's marker: whatever changes after it is the bottle's.
            marked = bottle.exec(mark_argv())
            if not marked.ok:
                raise BotBottleError(
                    f"cannot write the launch marker in VM {prepared.machine} "
                    f"(exit {marked.exit_code})"
                )
            yield bottle
        log.debug("teardown", slug=plan.slug, seconds=round(down.seconds, 3))

    # -- enumeration -------------------------------------------------------------

    def _ours(self) -> list[Any]:
        binary = find_smolvm()
        if binary is None:
            return []
        return [m for m in Smolvm.locate().ls() if m.labels.get(L_BACKEND) == NAME]

    def list_active(self) -> list[ActiveBottle]:
        out = []
        for m in sorted(self._ours(), key=lambda m: m.name):
            if not m.running:
                continue
            services = m.labels.get(L_SERVICES, "")
            out.append(
                ActiveBottle(
                    backend=NAME,
                    slug=m.labels.get(L_SLUG, "?"),
                    agent=m.labels.get(L_AGENT, "?"),
                    label=m.labels.get(L_LABEL) or None,
                    started_at=m.labels.get(L_STARTED, ""),
                    services=tuple(s for s in services.split(",") if s),
                )
            )
        return out

    def stop(self, slug: str) -> bool:
        for m in self._ours():
            if m.labels.get(L_SLUG) == slug and m.running:
                Smolvm.locate().stop(m.name)
                return True
        return False

    def find_orphans(self) -> list[CleanupItem]:
        """Labelled machines (and the bundle's containers) whose launcher is gone."""
        from bot_bottle_docker.backend import _orphaned

        ours = home_id()
        items = [
            CleanupItem(NAME, "machine", m.name, m.labels.get(L_SLUG))
            for m in self._ours()
            if _orphaned(m.labels, ours)
        ]
        sidecars = self._sidecars or DockerSidecars(self.progress)
        items += sidecars.orphans(ours)
        return items

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        removed = []
        machines = [i for i in items if i.kind == "machine"]
        if machines:
            cli = Smolvm.locate()
            for item in machines:
                try:
                    m = cli.get(item.name)
                    if m is not None and m.running:
                        cli.stop(item.name)
                    cli.delete(item.name)
                    removed.append(item)
                except SmolvmError as exc:
                    log.warning("cleanup_failed", item=item.name, error=str(exc))
        rest = [i for i in items if i.kind != "machine"]
        if rest:
            sidecars = self._sidecars or DockerSidecars(self.progress)
            removed += sidecars.cleanup(rest)
        return removed


def _stop(cli: Smolvm, machine: str) -> None:
    try:
        cli.stop(machine)
    except SmolvmError as exc:
        if exc.code != "NOT_FOUND":
            raise


def _stderr_progress(line: str) -> None:
    import sys

    sys.stderr.write(f"{line}\n")


class DockerSidecars:
    """The bundle side, in Docker: the Docker backend's bundle (image, files,
    keys, container) plus a relay on the host's network serving the bottle's
    endpoints on its loopback alias."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress

    def agent_image(self, plan: BottlePlan) -> str:
        """The agent image's tag (built when missing)."""
        from bot_bottle_docker.images import ensure_agent_image

        return ensure_agent_image(plan.agent_image_spec, progress=self.progress).tag

    def save_image(self, tag: str, out: Path) -> Path:
        """Image ``tag`` (a built agent image or a snapshot) as a ``docker
        save`` archive smolvm boots from."""
        try:
            subprocess.run(["docker", "save", tag, "-o", str(out)], check=True, capture_output=True)
        except subprocess.CalledProcessError as exc:
            raise BotBottleError(
                f"docker save {tag} failed: {exc.stderr.decode(errors='replace').strip()}"
            ) from None
        out.chmod(0o600)
        return out

    def start(
        self, prepared: SmolPrepared, labels: dict[str, str], run_dir: Path, down: Teardown
    ) -> Callable[[], None]:
        from bot_bottle_docker.backend import DockerBackend, DockerPrepared, _client, _remove
        from bot_bottle_docker.images import ensure_bundle_image

        plan = prepared.plan
        docker_backend = DockerBackend()
        client = _client()
        down.push("docker client", client.close)
        bundle_tag = plan.bundle_image or ensure_bundle_image(progress=self.progress).tag
        etc, sock = run_dir / "etc", run_dir / "sock"
        history, queue = begin_history(plan, NAME)
        down.push("history", lambda: history.end(queue))
        docker_backend._write_files(plan, etc, sock, queue)
        keys_dir = run_dir / "keys"
        docker_backend._stage_keys(plan, keys_dir, down)
        as_docker = DockerPrepared(
            plan=plan,
            backend=NAME,
            network=prepared.network,
            bundle_name=prepared.bundle_name,
            labels=labels,
        )
        mounts = (run_dir, keys_dir, queue, history.logs_dir)
        bundle = docker_backend._start_bundle(client, as_docker, labels, bundle_tag, mounts, down)
        relay = self._start_relay(client, prepared, labels, bundle_tag, sock)
        down.push(f"container {prepared.relay_name}", lambda: _remove(relay))
        relay.start()
        return lambda: docker_backend._wait_ready(sock, bundle, relay)

    def _start_relay(
        self, client: Any, prepared: SmolPrepared, labels: dict[str, str], tag: str, sock: Path
    ) -> Any:
        from bot_bottle_sidecars.layout import DAEMON_USERS, SOCK_DIR, agent_relay_argv

        from bot_bottle_docker.seccomp import seccomp_opt

        # Listens on the plan's agent_host: this bottle's loopback alias.
        argv = agent_relay_argv(prepared.plan)
        uid = DAEMON_USERS["relay"].uid
        return client.containers.create(
            tag,
            entrypoint=argv,
            command=[],
            name=prepared.relay_name,
            # The host's loopback alias is where the VM connects.
            network_mode="host",
            volumes={str(sock): {"bind": SOCK_DIR, "mode": "rw"}},
            labels={**labels, L_ROLE: "relay"},
            user=f"{uid}:{uid}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", seccomp_opt()],
            detach=True,
        )

    def orphans(self, ours: str) -> list[CleanupItem]:
        from bot_bottle_docker.backend import _client, _orphaned
        from bot_bottle_docker.dockerhost import DockerUnreachable

        try:
            client = _client()
        except (BotBottleError, DockerUnreachable):
            return []
        try:
            flt: dict[str, Any] = {"label": f"{L_BACKEND}={NAME}"}
            items = [
                CleanupItem(NAME, "container", c.name or "?", c.labels.get(L_SLUG))
                for c in client.containers.list(all=True, filters=flt)
                if _orphaned(c.labels or {}, ours)
            ]
            items += [
                CleanupItem(
                    NAME, "network", n.name or "?", (n.attrs.get("Labels") or {}).get(L_SLUG)
                )
                for n in client.networks.list(filters=flt)
                if _orphaned(n.attrs.get("Labels") or {}, ours)
            ]
            return items
        finally:
            client.close()

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        from bot_bottle_docker.backend import DockerBackend, _client

        client = _client()
        try:
            backend = DockerBackend()
            ordered = sorted(items, key=lambda i: i.kind != "container")
            return [i for i in ordered if backend._remove_item(client, i)]
        finally:
            client.close()
