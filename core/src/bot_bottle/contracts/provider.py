"""The agent-provider contract: which agent runs in the bottle, and how.

A provider owns the agent's image, the environment it sees (placeholders
only), the egress routes its API needs (with the real credential injected by
egress, never given to the agent), and the steps that make the agent ready
inside a launched bottle (CA trust, skills, prompt, MCP registration).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from bot_bottle.contracts.common import PluginComponent

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot_bottle.contracts.backend import RunningBottle
    from bot_bottle.secrets import Secret


#: Where the backend copies the bottle CA in the guest (``ca_cert_path``). Debian's
#: ``update-ca-certificates`` reads ``/usr/local/share/ca-certificates/*.crt``,
#: and a fixed path lets a plan point client variables
#: (``NODE_EXTRA_CA_CERTS``, ``CODEX_CA_CERTIFICATE``, ...) at it before the
#: bottle exists.
GUEST_CA_PATH = "/usr/local/share/ca-certificates/bot-bottle-ca.crt"


@dataclass(frozen=True)
class ImageSpec:
    """How to build the agent image. ``context`` defaults to the Dockerfile's folder."""

    dockerfile: Path
    context: Path | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRoute:
    """An egress route the provider owns. Provider routes win their host over
    routes the bottle declares. ``token`` is the real credential: it reaches
    the egress daemon's environment only."""

    host: str
    auth_scheme: Literal["Bearer", "token"] | None = None
    token: Secret | None = None


@dataclass(frozen=True)
class ProviderPlan:
    """What the provider decided for one launch. Contains no secret in clear."""

    #: Environment the agent sees: placeholders, never real tokens.
    env: Mapping[str, str]
    routes: tuple[ProviderRoute, ...] = ()
    #: The non-root user the agent runs as, and its home in the guest.
    user: str = "agent"
    guest_home: str = "/home/agent"
    #: Where skills and the system prompt go in the guest.
    skills_dir: str | None = None
    prompt_path: str | None = None


@dataclass(frozen=True)
class ProvisionContext:
    """Launch-time facts the provider needs to provision a bottle.

    Before ``provision`` is called the backend's ``launch`` has copied the
    bottle CA to ``ca_cert_path`` (root-owned, 0644) and the plan has set the
    agent's proxy and CA variables; :mod:`bot_bottle.provider_kit` has the
    common steps (trust store, git config, skills, prompt).
    """

    plan: ProviderPlan
    #: Guest path of the bottle CA certificate (PEM) the agent must trust;
    #: already present in the guest when ``provision`` runs.
    ca_cert_path: str
    #: URL of the supervise MCP server as the agent reaches it, if enabled.
    supervise_url: str | None
    #: Host paths of the skill directories to copy in.
    skills: Sequence[Path] = ()
    #: The agent's system prompt (Markdown body of its file).
    prompt: str = ""
    label: str | None = None
    #: ``git config --global`` entries for the agent user, in order:
    #: ``url.<git-gate>.insteadOf`` for each repo, then ``user.name``/``user.email``.
    #: The launcher applies them after :meth:`AgentProvider.provision`
    #: (``provider_kit.apply_git_config``); a provider need not.
    git_config: tuple[tuple[str, str], ...] = ()
    #: The provider's validated options (its ``options_model``), or None.
    options: BaseModel | None = None
    #: The agent's working directory in the guest (where ``--cwd`` is mounted),
    #: e.g. for a client that asks to trust the folder it starts in.
    workdir: str | None = None


class AgentProvider(PluginComponent, ABC):
    """Registered through ``bot_bottle_register_agent_providers``."""

    #: pydantic model of the provider's options under the bottle's
    #: ``agent_provider:`` block (unknown keys must be rejected:
    #: ``model_config = ConfigDict(extra="forbid")``). The manifest reads it
    #: from the factory when the factory is the class (no instance is built),
    #: else from the built object, and validates the options as strict JSON:
    #: strings become ``Path``/enums, YAML's ``yes`` is not a bool.
    options_model: ClassVar[type[BaseModel]]

    def host_skills_dir(self, host_env: Mapping[str, str]) -> Path:
        """The host directory the bottle's and agent's ``skills:`` names are
        read from (``<dir>/<name>``). The default is ``~/.claude/skills``,
        where Agent Skills are installed by convention; a provider whose
        client keeps them elsewhere says so here."""
        return Path(host_env.get("HOME") or "~").expanduser() / ".claude" / "skills"

    @abstractmethod
    def image(self, options: BaseModel) -> ImageSpec:
        """The image to build for the agent. Pure."""

    @abstractmethod
    def plan(self, options: BaseModel, *, host_env: Mapping[str, str]) -> ProviderPlan:
        """Decide env, routes and paths for one launch.

        May read host state (an env var holding a token, a login file) but
        writes nothing. Raises :class:`~bot_bottle.errors.BotBottleError`
        naming the missing variable or file when a credential is absent.
        """

    @abstractmethod
    def provision(self, bottle: RunningBottle, ctx: ProvisionContext) -> None:
        """Make the agent ready inside the launched bottle, using only
        ``bottle.exec`` / ``bottle.copy_in``. Raises on failure (launch then
        tears the bottle down). The bottle CA file is already at
        ``ctx.ca_cert_path``; the git config is applied by the launcher."""

    @abstractmethod
    def interactive_argv(self, ctx: ProvisionContext) -> list[str]:
        """argv that starts the agent for a person at a terminal."""

    @abstractmethod
    def headless_argv(self, ctx: ProvisionContext, prompt: str) -> list[str]:
        """argv that runs the agent non-interactively on ``prompt``."""
