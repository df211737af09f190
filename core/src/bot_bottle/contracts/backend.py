"""The backend contract: where and how a bottle runs (Docker, a microVM, ...).

Lifecycle, in the order core calls it::

    backend.is_available()            # cheap probe, no side effects
    prepared = backend.prepare(plan)  # PURE: computes names, networks, argv
    with backend.launch(prepared) as bottle:   # creates everything
        provider.provision(bottle, ...)        # exec / copy_in through the bottle
        bottle.attach(argv) or bottle.run(argv)
    # leaving the block tears everything down, last created first

Enumeration (``list_active``) and orphan reaping (``find_orphans`` then
``cleanup``) work from labels the backend put on its resources, never from
name guessing, so they also find what a killed run left behind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bot_bottle.contracts.common import HostCheck, PluginComponent
from bot_bottle.errors import BotBottleError

if TYPE_CHECKING:
    from bot_bottle.contracts.provider import ProviderPlan
    from bot_bottle.egress.config import EgressConfig
    from bot_bottle.gitgate.plan import GitGatePlan
    from bot_bottle.imagebuild import ImageSpec
    from bot_bottle.manifest.models import Resources
    from bot_bottle.secrets import Secret


#: The backend a launch uses when none is named (``--backend``), and the one
#: a bottle recorded by a core that did not record its backend ran on.
DEFAULT_BACKEND = "docker"
#: Where the agent reaches its endpoints unless its backend says otherwise:
#: its own loopback, served by a relay in its network namespace.
AGENT_LOOPBACK = "127.0.0.1"


@runtime_checkable
class BottlePlan(Protocol):
    """What core hands a backend: the resolved, side-effect-free plan.

    Core's :class:`bot_bottle.plan.BottlePlan` satisfies it; a backend types
    its argument with this protocol and reads nothing else, so a plan made
    by another core version (or a test's own) works as long as it has these.
    """

    @property
    def slug(self) -> str:
        """Unique per launch; names and labels every resource of the bottle."""
        ...

    @property
    def agent(self) -> str: ...

    @property
    def label(self) -> str | None: ...

    @property
    def cwd(self) -> Path | None:
        """Host directory to mount as the agent's working directory, if any."""
        ...

    @property
    def bottle(self) -> str: ...

    @property
    def provider_plan(self) -> ProviderPlan:
        """The provider's decisions: agent user, its home, env placeholders."""
        ...

    @property
    def agent_image_spec(self) -> ImageSpec:
        """What to build for the agent (``provider_kit.agent_image_spec``)."""
        ...

    @property
    def agent_image(self) -> str | None:
        """An image to boot instead of building one (a resumed snapshot)."""
        ...

    @property
    def bundle_image(self) -> str | None: ...

    @property
    def agent_env(self) -> Mapping[str, Secret]: ...

    @property
    def egress_config(self) -> EgressConfig | None: ...

    @property
    def gitgate(self) -> GitGatePlan | None: ...

    @property
    def gitgate_secrets(self) -> Mapping[str, Secret]: ...

    @property
    def supervise(self) -> bool: ...

    @property
    def agent_host(self) -> str:
        """Where the agent reaches its endpoints: what
        :meth:`Backend.agent_endpoint_host` named for this bottle."""
        ...

    @property
    def extra_hosts(self) -> Mapping[str, str]:
        """Names pinned to addresses in the sidecars (never in the agent)."""
        ...

    @property
    def upstream_ca(self) -> Path | None:
        """Host path of the extra CA bundle egress trusts upstream, if any."""
        ...

    @property
    def resources(self) -> Resources: ...

    @property
    def backend_options(self) -> Mapping[str, Any]:
        """Options for the backend the operator gave (e.g. Docker's ``gvisor``)."""
        ...

    def bundle_env(self) -> Mapping[str, Secret]:
        """The sidecars' environment: every credential slot."""
        ...


@dataclass(frozen=True)
class PreparedBottle:
    """What ``prepare`` computed. Backends subclass it to add their fields."""

    plan: BottlePlan
    backend: str
    #: The agent's working directory in the guest (where ``--cwd`` is
    #: mounted, else its home); providers get it in ``ProvisionContext``.
    workdir: str | None = None

    def describe(self) -> dict[str, Any]:
        """What ``start --dry-run --json`` shows under ``backend``."""
        return {"workdir": self.workdir}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class RunningBottle(ABC):
    """A launched bottle; valid only inside ``Backend.launch``'s ``with`` block."""

    slug: str

    @property
    def timings(self) -> Mapping[str, float]:
        """phase -> seconds the launch took so far (images, files,
        containers, sidecars); ``--timings`` shows them. Default: none."""
        return MappingProxyType({})

    @abstractmethod
    def exec(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run ``argv`` (never a shell string) in the agent and wait for it.

        ``env`` adds to the agent's environment for this call only and is not
        written anywhere. Returns the exit code and captured output; raises
        :class:`~bot_bottle.errors.BotBottleError` only when the bottle itself
        is unusable (gone, backend unreachable), not for a non-zero exit.
        """

    @abstractmethod
    def copy_in(
        self, src: Path, dest: str, *, mode: int | None = None, owner: str | None = None
    ) -> None:
        """Copy a host file or directory to ``dest`` in the agent.

        ``mode`` and ``owner`` ("user" or "user:group") are applied after the
        copy, since copies keep the host's uid and mode otherwise.
        """

    @abstractmethod
    def copy_out(self, src: str, dest: Path) -> None:
        """Copy ``src`` from the agent to the host path ``dest``."""

    def wait_ready(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Block until the bottle's sidecar endpoints answer inside the agent.

        A backend may yield the bottle while its sidecars still boot, so the
        provider provisions in parallel (``provision`` must not need the
        network). ``attach`` and ``run`` wait themselves; call this before
        using ``exec`` for anything that goes through the sidecars.
        """

    def keep_for_resume(self) -> None:  # noqa: B027 - optional hook, default no-op
        """The agent exited non-zero and its state is preserved: at the end of
        ``launch``, stop the agent (its filesystem kept for ``bot-bottle
        commit``/``resume``) instead of removing it. Sidecars go as usual."""

    @abstractmethod
    def attach(self, argv: Sequence[str], *, user: str | None = None) -> int:
        """Run ``argv`` interactively on the user's terminal; return its exit code.

        Uses a real TTY, forwards window-size changes, and restores the host
        terminal on every exit path.
        """

    @abstractmethod
    def run(self, argv: Sequence[str], *, user: str | None = None) -> int:
        """Run ``argv`` headless, streaming its output; return its exit code."""


@dataclass(frozen=True)
class DaemonState:
    """One sidecar daemon as the bundle's init last reported it."""

    name: str
    #: running | restarting | failed (init gave up) | stopped | stopping | idle
    #: (started on its first connection, none yet: init's on_demand)
    state: str
    crashes: int = 0
    last_exit: str | None = None


@dataclass(frozen=True)
class ActiveBottle:
    """One running bottle as ``list active`` shows it."""

    backend: str
    slug: str
    agent: str
    label: str | None
    started_at: str
    services: tuple[str, ...] = ()
    #: Empty when unknown (another user's bottle, a backend that cannot tell).
    daemons: tuple[DaemonState, ...] = ()


@dataclass(frozen=True)
class CleanupItem:
    """A resource ``cleanup`` would remove (container, network, volume, state dir)."""

    backend: str
    kind: str
    name: str
    slug: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class EgressControl(ABC):
    """A running bottle's egress daemon, as the operator changes it live.

    Core reads the rendered config with :meth:`read_config`, writes the new
    one with :meth:`write_config` (atomic: the daemon sees the old file or
    the new one), calls :meth:`signal_reload`, and confirms the change
    through :meth:`live_routes`; a daemon that refused the file keeps its old
    table, and :meth:`events` tells why.

    A backend that mounts the config from a host directory names the file in
    :attr:`config_path`, and the default :meth:`read_config` and
    :meth:`write_config` use it (write-then-rename in the mounted directory,
    never a single-file mount, which would pin the old inode). A backend with
    no shared filesystem (a cluster) overrides both and moves the bytes its
    own way (e.g. over exec).
    """

    slug: str

    @property
    def config_path(self) -> Path:
        """Host path of the rendered egress config the daemon reads, when there is one."""
        raise NotImplementedError(
            f"{type(self).__name__} has no host config file; it overrides read_config/write_config"
        )

    def read_config(self) -> bytes:
        """The rendered egress config as the daemon reads it now."""
        try:
            return self.config_path.read_bytes()
        except OSError as exc:
            raise BotBottleError(
                f"cannot read bottle {self.slug}'s egress config {self.config_path}: "
                f"{exc.strerror}",
                hint="is the bottle running on this machine?",
            ) from None

    def write_config(self, data: bytes) -> None:
        """Replace the config atomically, readable by the daemon's user (0644)."""
        from bot_bottle.contracts.supervise import atomic_write

        atomic_write(self.config_path, data, mode=0o644)

    @abstractmethod
    def signal_reload(self) -> None:
        """Ask the daemon to re-read its config (SIGHUP); does not wait."""

    @abstractmethod
    def live_routes(self) -> dict[str, Any]:
        """The daemon's introspection document (``GET /routes``): what it enforces now."""

    @abstractmethod
    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log records (refusals, reloads) written at or
        after ``since`` (a Unix time), oldest first."""


@dataclass(frozen=True)
class BaseImageRequest:
    """``bot-bottle setup``: how to make the base image bottles build FROM."""

    #: Use (tag) this existing image, pulled when missing.
    from_image: str | None = None
    #: Import this root filesystem tarball.
    rootfs: Path | None = None
    #: Otherwise debootstrap this Debian suite from this mirror (None: defaults).
    suite: str | None = None
    mirror: str | None = None
    force: bool = False


class Backend(PluginComponent, ABC):
    """Runs bottles. Registered through ``bot_bottle_register_backends``."""

    def host_checks(self) -> list[HostCheck]:
        """``doctor``'s lines for what this backend needs on the host (its
        engine, the base image), beyond :meth:`is_available`. Must not raise."""
        return []

    def setup(self, request: BaseImageRequest, progress: Callable[[str], None]) -> str:
        """Make what bottles of this backend build from (``bot-bottle
        setup``); return the one line to print. The default has nothing to do."""
        return f"backend {self.name} needs no setup"

    def agent_endpoint_host(self, slug: str) -> str:
        """The host (an IP address or a name the agent resolves) at which the
        agent of bottle ``slug`` reaches its proxy, git-gate and supervise
        endpoints. Core writes it into every agent-side URL: the proxy
        variables, git-gate's ``insteadOf`` rewrites, the MCP URL. PURE:
        planning calls it before anything exists, so it must follow from the
        slug alone.

        The default is the agent's own loopback, right for a backend that
        relays the endpoints into the agent's network namespace (Docker; a
        pod whose relay shares the agent's). A backend whose agent is a VM of
        its own names the address its relay listens on, or a name it pins in
        the agent's ``/etc/hosts`` at launch when the address is known only
        then.
        """
        return AGENT_LOOPBACK

    def preflight(self, plan: BottlePlan) -> dict[str, str]:
        """Extra ``name: state`` notes for the launch preflight (may probe the
        engine; must not change anything)."""
        return {}

    @abstractmethod
    def prepare(self, plan: BottlePlan) -> PreparedBottle:
        """Compute everything launch needs. PURE: no processes, files or API calls.

        ``--dry-run`` calls only this. Raises
        :class:`~bot_bottle.errors.BotBottleError` when the plan cannot run on
        this backend (e.g. a feature the backend lacks).
        """

    @abstractmethod
    def launch(self, prepared: PreparedBottle) -> AbstractContextManager[RunningBottle]:
        """Create the bottle; yield it; tear it down on leaving, in LIFO order.

        Before yielding, copy the bottle CA certificate to the guest path
        core's ``ProvisionContext.ca_cert_path`` names
        (:data:`bot_bottle.contracts.provider.GUEST_CA_PATH`), root-owned, mode 0644: the
        provider's ``provision`` trusts it from there.

        Every resource registers its own teardown as soon as it exists, so an
        exception or Ctrl-C in any phase removes what was created. Teardown
        failures are logged, never swallowed silently.
        """

    @abstractmethod
    def list_active(self) -> list[ActiveBottle]:
        """The bottles of this backend that are running now (read-only)."""

    @abstractmethod
    def find_orphans(self) -> list[CleanupItem]:
        """Resources left behind by bottles no live process owns (read-only)."""

    @abstractmethod
    def cleanup(self, items: Sequence[CleanupItem]) -> list[CleanupItem]:
        """Remove ``items`` (as found by ``find_orphans``); return those removed."""

    def egress_control(self, slug: str) -> EgressControl | None:
        """The live egress of running bottle ``slug``, or None when this
        backend does not run it (or cannot change egress live)."""
        return None

    def stop(self, slug: str) -> bool:
        """Stop running bottle ``slug`` (its launcher tears the rest down);
        return False when this backend does not run it."""
        return False
