"""The Apple Container backend (Apple's ``container`` CLI, macOS 26+).

Each container is its own lightweight VM. A bottle is:

* ``bb-<slug>-agentnet``: a host-only network (``container network create
  --internal``); the agent's only network.
* ``bb-<slug>-egress``: a NAT network; the sidecar bundle's way out.
* ``bb-<slug>-sidecars``: the bundle, on both networks. Its daemons listen
  on its loopback as in every backend; a relay the launcher starts in it
  with ``container exec`` (the layout's agent relay, listening on the
  bundle's host-only address instead of the agent's loopback) serves the
  agent's endpoints there. The launcher owns that exec for the bottle's
  lifetime.
* ``bb-<slug>-agent``: the agent, ``--no-dns`` (no resolver at all). Its
  endpoints are at :data:`AGENT_HOST`, a name the launcher pins to the
  bundle's host-only address in the agent's ``/etc/hosts`` (root's file)
  right after the agent starts: the address is vmnet's to assign at run
  time, and ``container run`` has no ``--ip``, while core needs the host
  at planning time (``agent_endpoint_host``) for the proxy variables (both
  cases: curl reads only ``http_proxy`` for http://), git-gate's
  ``insteadOf`` rewrites and the MCP URL.

Weaker than the Docker backend, and said so in ``preflight``: a host-only
vmnet network still reaches the host (its gateway), so the agent can talk
to any service the Mac listens with on that interface, raw DNS to the
gateway included; Docker's agent has no interface at all. git-gate's deploy
keys reach only the bundle VM (a read-only mount under the root-only
secrets directory, as the bottle CA's key does); the agent VM never mounts
them. ``--cwd`` is refused: the Docker backend's workspace git guards are
not ported.

Every resource carries the ``bot-bottle.*`` labels; ``list_active``,
``find_orphans`` and ``cleanup`` work from them alone.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot_bottle_sidecars.layout import (
    AGENT_READY,
    BUNDLE_READY,
    CA_DIR,
    DAEMON_USERS,
    ETC,
    GATE_ALLOW_DIR,
    GATE_KEYS,
    LOG_DIR,
    QUEUE_DIR,
    SECRETS_CA,
    SECRETS_GATE_KEYS,
    SOCK_DIR,
    agent_relay_argv,
    bundle_hosts,
    endpoints,
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
)
from bot_bottle.contracts.backend import (
    ActiveBottle,
    Backend,
    BaseImageRequest,
    BottlePlan,
    CleanupItem,
    PreparedBottle,
    RunningBottle,
)
from bot_bottle.contracts.common import Availability, HostCheck
from bot_bottle.errors import BotBottleError
from bot_bottle.log import get_logger
from bot_bottle.state import StateDir, home_id, launcher_gone, now_iso
from bot_bottle.teardown import Teardown
from bot_bottle.termtext import visible
from bot_bottle_apple_container.cli import (
    ContainerCLI,
    ContainerCLIError,
    address_on,
    cli_path,
    id_of,
    labels_of,
)
from bot_bottle_apple_container.running import AppleRunningBottle, env_file

NAME = "apple_container"
READY_TIMEOUT = 60.0
#: What the isolation is, for ``start``'s preflight and ``--dry-run``.
ISOLATION = (
    "agent VM on a host-only network: the proxy is its only route out, but the "
    "Mac itself (the network's gateway: its DNS and any service on that "
    "interface) stays reachable; weaker than Docker's no-interface agent"
)

LOAD_BASE_HINT = (
    "on a Linux host: 'bot-bottle setup' then 'docker save bot-bottle/base:trixie -o base.tar'; "
    "here: 'container image load -i base.tar'"
)

log = get_logger("bot_bottle_apple_container")

#: The OS probes, seams for the tests (the CLI runs on macOS only).
host_os: Callable[[], str] = platform.system


def mac_version() -> str:
    return platform.mac_ver()[0]


#: ``container network`` (the host-only agent network) needs macOS 26.
MIN_MACOS = 26
#: The name the agent reaches its endpoints at, pinned in its /etc/hosts to
#: the bundle's host-only address (``.internal``: reserved for private use,
#: never a public name).
AGENT_HOST = "sidecars.bot-bottle.internal"


@dataclass(frozen=True)
class ApplePrepared(PreparedBottle):
    agent_network: str = ""
    egress_network: str = ""
    bundle_name: str = ""
    agent_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    services: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "networks": [self.agent_network, self.egress_network],
            "containers": [self.bundle_name, self.agent_name],
            "agent_network": f"{self.agent_network} (host-only, --internal)",
            "isolation": ISOLATION,
            "services": list(self.services),
            "workdir": self.workdir,
        }


def _stderr_progress(line: str) -> None:
    sys.stderr.write(f"  {visible(line)}\n")


class AppleContainerBackend(Backend):
    name = NAME
    description = "Apple container CLI (macOS 26+): agent VM on a host-only network, sidecar bundle"

    def __init__(self) -> None:
        self.progress: Callable[[str], None] = _stderr_progress

    # -- host --------------------------------------------------------------------

    def is_available(self) -> Availability:
        system = host_os()
        if system != "Darwin":
            return Availability.no(
                f"Apple's container CLI runs on macOS 26+ only; this host is {system}",
                "use --backend docker here",
            )
        version = mac_version()
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        if major < MIN_MACOS:
            return Availability.no(
                f"macOS {version or '?'}: the container CLI's networks (the agent's "
                f"host-only network) need macOS {MIN_MACOS}+",
                "use --backend docker on this Mac",
            )
        exe = cli_path()
        if exe is None:
            return Availability.no(
                "Apple's container CLI is not on PATH",
                "install it from github.com/apple/container, then 'container system start'",
            )
        try:
            proc = subprocess.run(
                [exe, "system", "status"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Availability.no(f"'container system status' failed: {exc}")
        if proc.returncode != 0:
            return Availability.no(
                "the container system service is not running",
                "run 'container system start'",
            )
        return Availability.yes(f"container CLI at {exe}; service running")

    def host_checks(self) -> list[HostCheck]:
        avail = self.is_available()
        if not avail.ok:
            return [HostCheck("WARN", "apple container", avail.detail, avail.hint)]
        from bot_bottle.imagebuild import base_image_name
        from bot_bottle_apple_container.images import image_id

        engine = HostCheck("OK", "apple container", avail.detail)
        base = base_image_name()
        try:
            present = image_id(ContainerCLI(), base) is not None
        except BotBottleError as exc:
            return [engine, HostCheck("WARN", "apple container base image", exc.message)]
        if present:
            return [engine, HostCheck("OK", "apple container base image", f"{base} is present")]
        return [engine, HostCheck("FAIL", "apple container base image", f"{base} is missing: "
                                  "every bottle image builds FROM it", LOAD_BASE_HINT)]  # fmt: skip

    def setup(self, request: BaseImageRequest, progress: Callable[[str], None]) -> str:
        """Only checks: the base image comes from a Docker host (``container
        image load`` of a ``docker save``); debootstrap needs Linux."""
        from bot_bottle.imagebuild import base_image_name
        from bot_bottle_apple_container.images import image_id

        avail = self.is_available()
        if not avail.ok:
            raise BotBottleError(f"backend {NAME!r} is not available: {avail.detail}",
                                 hint=avail.hint)  # fmt: skip
        base = base_image_name()
        if image_id(ContainerCLI(), base) is not None and not request.force:
            return f"base image {base} already present"
        raise BotBottleError(
            f"the apple_container backend cannot make the base image {base} itself",
            hint=LOAD_BASE_HINT,
        )

    def agent_endpoint_host(self, slug: str) -> str:
        """A name, not an address: the bundle's host-only address is known
        only once it runs; launch pins the name in the agent's /etc/hosts."""
        return AGENT_HOST

    def preflight(self, plan: BottlePlan) -> dict[str, str]:
        return {"isolation": ISOLATION}

    # -- prepare (pure) ------------------------------------------------------------

    def prepare(self, plan: BottlePlan) -> ApplePrepared:
        system = host_os()  # no process: prepare stays pure
        if system != "Darwin":
            raise BotBottleError(
                f"backend {NAME!r} is not available: Apple's container CLI runs on macOS 26+ "
                f"only; this host is {system}",
                hint="use --backend docker here",
            )
        if plan.cwd is not None:
            raise BotBottleError(
                "the apple_container backend does not mount a workspace (--cwd) yet: the "
                "Docker backend's workspace git guards are not ported",
                hint="drop --cwd, or use --backend docker for a workspace",
            )
        if plan.agent_host != AGENT_HOST:
            # A plan made without this backend's agent_endpoint_host: its
            # URLs name an address the agent VM does not serve.
            raise BotBottleError(
                f"the plan points the agent at {plan.agent_host}, not {AGENT_HOST}",
                hint="plan the bottle with --backend apple_container",
            )
        prefix = f"bb-{plan.slug}"
        labels = bottle_labels(plan, NAME, endpoints(plan))
        return ApplePrepared(
            plan=plan,
            backend=NAME,
            agent_network=f"{prefix}-agentnet",
            egress_network=f"{prefix}-egress",
            bundle_name=f"{prefix}-sidecars",
            agent_name=f"{prefix}-agent",
            labels=labels,
            workdir=plan.provider_plan.guest_home,
            services=tuple(endpoints(plan)),
        )

    # -- launch --------------------------------------------------------------------

    @contextlib.contextmanager
    def launch(self, prepared: PreparedBottle) -> Iterator[RunningBottle]:
        if not isinstance(prepared, ApplePrepared):
            raise BotBottleError("launch needs what AppleContainerBackend.prepare returned")
        avail = self.is_available()
        if not avail.ok:  # before anything is created
            raise BotBottleError(
                f"backend {NAME!r} is not available: {avail.detail}", hint=avail.hint
            )
        plan = prepared.plan
        cli = ContainerCLI()
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        with Teardown(plan.slug) as down:
            agent_tag = plan.agent_image or self._agent_image(cli, plan)
            bundle_tag = plan.bundle_image or self._bundle_image(cli)
            timings["images"] = time.monotonic() - t0

            state = StateDir.for_slug(plan.slug)
            run_dir = state.run_dir
            history, queue = begin_history(plan, NAME)
            down.push("history", lambda: history.end(queue))
            down.push("runtime files", lambda: shutil.rmtree(run_dir, ignore_errors=True))
            self._write_files(plan, run_dir, queue)
            self._stage_keys(plan, run_dir / "keys", down)

            labels = {**prepared.labels, L_STARTED: now_iso()}
            for net, role, internal in (
                (prepared.agent_network, "agent-network", True),
                (prepared.egress_network, "egress-network", False),
            ):
                args = ["network", "create", *(["--internal"] if internal else [])]
                args += _label_args({**labels, L_ROLE: role})
                cli.run(*args, net)
                down.push(f"network {net}", lambda n=net: _delete_network(cli, n))

            dirs = (run_dir, queue, history.logs_dir)
            self._run_bundle(cli, prepared, labels, bundle_tag, dirs, down)
            self._pin_hosts(cli, prepared)
            bundle_ip = self._address(cli, prepared.bundle_name, prepared.agent_network)
            relay = self._start_relay(cli, prepared, bundle_ip, down)
            self._run_agent(cli, prepared, labels, agent_tag, down)
            self._pin_agent_host(cli, prepared, bundle_ip)
            timings["containers"] = time.monotonic() - t0

            sock = run_dir / "sock"
            bottle = AppleRunningBottle(
                plan.slug,
                cli,
                prepared.agent_name,
                user=plan.provider_plan.user,
                workdir=prepared.workdir,
                wait_ready=lambda: self._wait_ready(cli, prepared, sock, relay),
                timings=timings,
            )
            from bot_bottle.contracts.provider import GUEST_CA_PATH

            bottle.copy_in(run_dir / "ca" / "bot-bottle-ca.crt", GUEST_CA_PATH, mode=0o644)
            yield bottle

    def _agent_image(self, cli: ContainerCLI, plan: BottlePlan) -> str:
        from bot_bottle_apple_container.images import ensure_image

        return ensure_image(plan.agent_image_spec, cli=cli, progress=self.progress).tag

    def _bundle_image(self, cli: ContainerCLI) -> str:
        from bot_bottle_sidecars.bundle import bundle_spec

        from bot_bottle_apple_container.images import ensure_image

        return ensure_image(bundle_spec(), cli=cli, progress=self.progress).tag

    def _write_files(self, plan: BottlePlan, run_dir: Path, queue: Path) -> None:
        from bot_bottle_sidecars.launch.ca import generate_bottle_ca
        from bot_bottle_sidecars.launch.files import write_etc

        etc, sock = run_dir / "etc", run_dir / "sock"
        for d in (etc, sock, queue, run_dir / "keys", run_dir / "gate-allow"):
            d.mkdir(parents=True, mode=0o700, exist_ok=True)
        write_etc(plan, etc)
        # The daemons' uids are not the host user's, and a virtiofs share
        # shows host modes: etc/ readable, the two shared directories
        # writable. The 0700 state dir around them keeps them private on
        # the host.
        for path in [etc, *etc.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        for d in (sock, queue):
            d.chmod(0o777)
        generate_bottle_ca(run_dir / "ca", name=f"bot-bottle {plan.slug}")

    def _run_bundle(
        self,
        cli: ContainerCLI,
        prepared: ApplePrepared,
        labels: Mapping[str, str],
        tag: str,
        dirs: tuple[Path, Path, Path],
        down: Teardown,
    ) -> None:
        """``dirs``: the run dir, supervise's queue and the logs directory."""
        plan = prepared.plan
        run_dir, queue, logs = dirs
        mounts = [
            (run_dir / "etc", ETC, True),
            (run_dir / "ca", SECRETS_CA, True),
            # Deploy keys: the bundle VM only, under the root-only SECRETS_IN.
            (run_dir / "keys", SECRETS_GATE_KEYS, True),
            (queue, QUEUE_DIR, False),
            (logs, LOG_DIR, False),
            (run_dir / "gate-allow", GATE_ALLOW_DIR, True),
            (run_dir / "sock", SOCK_DIR, False),
        ]
        args = ["run", "--detach", "--name", prepared.bundle_name]
        args += ["--network", prepared.agent_network, "--network", prepared.egress_network]
        args += _label_args({**labels, L_ROLE: "sidecars"})
        for src, dst, ro in mounts:
            args += [
                "--mount",
                f"type=bind,source={src},target={dst}" + (",readonly" if ro else ""),
            ]
        args += ["--tmpfs", CA_DIR, "--tmpfs", GATE_KEYS]
        args += _limit_args(plan.resources.bundle)
        # Credentials reach the bundle in a 0600 file the CLI reads, never on argv.
        with env_file({k: v.reveal() for k, v in plan.bundle_env().items()}) as env_args:
            down.push(
                f"container {prepared.bundle_name}", lambda: _delete(cli, prepared.bundle_name)
            )
            cli.run(*args, *env_args, tag)

    def _pin_hosts(self, cli: ContainerCLI, prepared: ApplePrepared) -> None:
        """The bundle's name pins (``extra_hosts``, the introspection name).

        The documented ``container run`` has no ``--add-host``: they are
        appended to the bundle's /etc/hosts before the relay starts, so no
        request of the agent can reach egress before they are in place.
        """
        lines = "".join(f"{ip} {name}\n" for name, ip in bundle_hosts(prepared.plan).items())
        if not lines:
            return
        cli.run("exec", "--interactive", "--user", "root", prepared.bundle_name,
                "sh", "-c", "cat >> /etc/hosts", stdin=lines.encode())  # fmt: skip

    def _stage_keys(self, plan: BottlePlan, keys_dir: Path, down: Teardown) -> None:
        """git-gate's deploy keys (the launch kit), into the directory the
        bundle mounts read-only under its root-only secrets directory;
        provisioned ones are revoked at teardown."""
        if plan.gitgate is None or not plan.gitgate.enabled:
            return
        from bot_bottle_sidecars.launch.keys import GateKeys

        keys = GateKeys(plan.gitgate, keys_dir, bottle_slug=plan.slug)
        down.push("git-gate keys", keys.close)
        keys.stage()

    def _pin_agent_host(self, cli: ContainerCLI, prepared: ApplePrepared, ip: str) -> None:
        """:data:`AGENT_HOST` -> the bundle's host-only address, in the agent's
        /etc/hosts (root's, 0644: the agent user cannot change it). Before
        launch yields, so before any agent process or provisioning runs."""
        cli.run("exec", "--interactive", "--user", "root", prepared.agent_name,
                "sh", "-c", "cat >> /etc/hosts",
                stdin=f"{ip} {AGENT_HOST}\n".encode())  # fmt: skip

    def _address(self, cli: ContainerCLI, name: str, network: str) -> str:
        info = cli.inspect(name)
        if info is None:
            raise BotBottleError(f"container {name} is gone right after it started")
        ip = address_on(info, network)
        if ip is None:
            raise BotBottleError(f"container {name} has no address on network {network}")
        return ip

    def _start_relay(
        self, cli: ContainerCLI, prepared: ApplePrepared, ip: str, down: Teardown
    ) -> subprocess.Popen[bytes]:
        """The layout's agent relay, inside the bundle, on its host-only
        address (the one the agent's pinned name resolves to)."""
        argv = agent_relay_argv(prepared.plan, listen_host=ip)
        relay_user = DAEMON_USERS["relay"]
        cmd = cli.argv(
            "exec", "--user", f"{relay_user.uid}:{relay_user.uid}", prepared.bundle_name, *argv
        )
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        down.push("agent relay", lambda: _stop_proc(proc))
        return proc

    def _run_agent(
        self,
        cli: ContainerCLI,
        prepared: ApplePrepared,
        labels: Mapping[str, str],
        tag: str,
        down: Teardown,
    ) -> None:
        plan = prepared.plan
        # The proxy variables already name AGENT_HOST (core's plan).
        env = {k: v.reveal() for k, v in plan.agent_env.items()}
        args = ["run", "--detach", "--name", prepared.agent_name]
        args += ["--network", prepared.agent_network, "--no-dns"]
        args += _label_args({**labels, L_ROLE: "agent"})
        args += ["--user", "root", "--workdir", prepared.workdir]
        args += _limit_args(plan.resources.agent)
        with env_file(env) as env_args:
            down.push(f"container {prepared.agent_name}", lambda: _delete(cli, prepared.agent_name))
            cli.run(*args, *env_args, "--entrypoint", "sleep", tag, "infinity")

    def _wait_ready(
        self, cli: ContainerCLI, prepared: ApplePrepared, sock: Path, relay: subprocess.Popen[bytes]
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        want = [sock / BUNDLE_READY, sock / AGENT_READY]
        delay = 0.05
        while not all(p.exists() for p in want):
            if relay.poll() is not None:
                err = (relay.stderr.read() if relay.stderr else b"").decode("utf-8", "replace")
                raise BotBottleError(
                    f"the agent relay in {prepared.bundle_name} exited "
                    f"({relay.returncode}): {err.strip()[-300:] or '(no output)'}"
                )
            for name in (prepared.bundle_name, prepared.agent_name):
                info = cli.inspect(name)
                if info is None or info.get("status") != "running":
                    raise BotBottleError(
                        f"container {name} stopped during start",
                        hint=f"'container logs {name}' while it exists says why",
                    )
            if time.monotonic() > deadline:
                raise BotBottleError(
                    f"the sidecars did not become ready within {READY_TIMEOUT:.0f} s",
                    hint=f"'container logs {prepared.bundle_name}' while the bottle runs",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -- enumeration -------------------------------------------------------------

    def list_active(self) -> list[ActiveBottle]:
        cli = ContainerCLI()
        out = []
        for c in cli.containers():
            labels = labels_of(c)
            if labels.get(L_BACKEND) != NAME or labels.get(L_ROLE) != "agent":
                continue
            out.append(
                ActiveBottle(
                    backend=NAME,
                    slug=labels.get(L_SLUG, "?"),
                    agent=labels.get(L_AGENT, "?"),
                    label=labels.get(L_LABEL) or None,
                    started_at=labels.get(L_STARTED, ""),
                    services=tuple(s for s in labels.get(L_SERVICES, "").split(",") if s),
                )
            )
        return sorted(out, key=lambda b: b.slug)

    def find_orphans(self) -> list[CleanupItem]:
        cli = ContainerCLI()
        ours = home_id()
        items: list[CleanupItem] = []
        for c in cli.containers(all_=True):
            labels = labels_of(c)
            if labels.get(L_BACKEND) == NAME and _orphaned(labels, ours):
                items.append(CleanupItem(NAME, "container", id_of(c), labels[L_SLUG]))
        for n in cli.networks():
            labels = labels_of(n)
            if labels.get(L_BACKEND) == NAME and _orphaned(labels, ours):
                items.append(CleanupItem(NAME, "network", id_of(n), labels[L_SLUG]))
        return items

    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        cli = ContainerCLI()
        removed = []
        # Containers first: a network in use cannot be deleted.
        for item in sorted(items, key=lambda i: i.kind != "container"):
            if item.kind == "container":
                ok = cli.run("delete", "--force", item.name, check=False).returncode == 0
            elif item.kind == "network":
                ok = cli.run("network", "delete", item.name, check=False).returncode == 0
            else:
                continue
            if ok:
                removed.append(item)
            else:
                log.warning("cleanup_failed", item=item.name)
        return removed

    def stop(self, slug: str) -> bool:
        cli = ContainerCLI()
        for c in cli.containers():
            labels = labels_of(c)
            if (labels.get(L_BACKEND), labels.get(L_SLUG), labels.get(L_ROLE)) == (
                NAME,
                slug,
                "agent",
            ):
                cli.run("stop", id_of(c))
                return True
        return False


def _label_args(labels: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in labels.items():
        out += ["--label", f"{k}={v}"]
    return out


def _limit_args(limits: Any) -> list[str]:
    out: list[str] = []
    if getattr(limits, "memory", None) is not None:
        out += ["--memory", str(limits.memory)]
    if getattr(limits, "cpus", None) is not None:
        # A VM gets whole CPUs.
        out += ["--cpus", str(max(1, round(limits.cpus)))]
    return out


def _delete(cli: ContainerCLI, name: str) -> None:
    proc = cli.run("delete", "--force", name, check=False)
    if proc.returncode != 0 and cli.inspect(name) is not None:
        raise ContainerCLIError(f"could not delete container {name}: {proc.stderr[-200:]!r}")


def _delete_network(cli: ContainerCLI, name: str) -> None:
    cli.run("network", "delete", name)


def _stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _orphaned(labels: Mapping[str, str], ours: str) -> bool:
    slug = labels.get(L_SLUG)
    if not slug:
        return False
    if labels.get(L_HOME) == ours:
        state = StateDir.for_slug(slug)
        return not (state.path.exists() and state.owner_alive)
    return launcher_gone(labels.get(L_LAUNCHER, ""))


__all__ = ["AppleContainerBackend", "ApplePrepared"]
