"""Planning a launch: a resolved agent becomes a :class:`BottlePlan`. PURE.

``make_plan`` reads the manifest's effective bottle, the provider's plan and
the host environment (``${HOST_VAR}`` values, route tokens; ``?prompt``
values are asked through ``ask``), and computes everything a backend needs:
the agent's environment, the egress config and its token slots, the git-gate
plan, whether supervise runs, the slug. It writes nothing, starts nothing and
contacts nothing: ``--dry-run`` shows exactly this.

Every value that may be a credential is a :class:`~bot_bottle.secrets.Secret`
(repr masked); the plan can be printed and logged.

How the agent reaches its sidecars: the agent has loopback only (no route
and no DNS, so nothing leaves except through them); its proxy, git-gate and
supervise endpoints are ``127.0.0.1:<port>`` in its own network namespace,
relayed by the backend to the sidecar bundle. So every URL the agent sees
names 127.0.0.1.
"""

from __future__ import annotations

import re
import secrets as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot_bottle.contracts.provider import GUEST_CA_PATH, ProviderPlan
from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.models import Resources
from bot_bottle.provider_kit import CA_ENV
from bot_bottle.secrets import Secret

if TYPE_CHECKING:
    from bot_bottle.contracts.provider import AgentProvider
    from bot_bottle.egress.config import EgressConfig
    from bot_bottle.gitgate.plan import GitGatePlan
    from bot_bottle.imagebuild import ImageSpec
    from bot_bottle.manifest import ResolvedAgent
    from bot_bottle.plugins import PluginHost

#: Ports of the three endpoints, the same inside the bundle and, relayed, on
#: the agent's loopback.
PROXY_PORT = 8080
GIT_PORT = 9418
MCP_PORT = 8765
LOOPBACK = "127.0.0.1"
#: CA variables set in the agent: every common TLS stack reads one of them.
CA_ENV_VARS = tuple(CA_ENV)
_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}-[0-9a-f]{6}$")


@dataclass(frozen=True)
class BottlePlan:
    """Everything one launch needs; satisfies ``contracts.backend.BottlePlan``."""

    slug: str
    agent: str
    label: str | None
    cwd: Path | None
    backend: str
    bottle: str
    provider: str
    provider_plan: ProviderPlan
    agent_image_spec: ImageSpec
    #: Tags filled in by the launcher once the images exist (None in a dry run).
    agent_image: str | None = None
    bundle_image: str | None = None
    #: The agent's complete environment (bottle env, provider placeholders,
    #: proxy and CA variables). Values are Secrets: bottle env may hold credentials.
    agent_env: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    egress_config: EgressConfig | None = None
    #: ``EGRESS_TOKEN_<n>`` (injected credentials) and ``EGRESS_SECRET_<n>``
    #: (the bottle's other secrets, for DLP): the egress daemon's environment only.
    egress_tokens: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    #: ``GITGATE_SECRET_<n>``: the same bottle secrets, for git-gate's push
    #: scan (a value the agent can read must not leave in a commit either).
    gitgate_secrets: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    gitgate: GitGatePlan | None = None
    supervise: bool = True
    #: Names pinned to addresses in the sidecar bundle (never in the agent).
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    #: Host path of the extra upstream CA bundle egress trusts, if any.
    upstream_ca: Path | None = None
    skills: tuple[Path, ...] = ()
    prompt: str = ""
    #: ``git config --global`` entries for the agent: insteadOf, user.*.
    git_config: tuple[tuple[str, str], ...] = ()
    #: Options for the backend, as the operator gave them (``--no-gvisor``
    #: is Docker's ``gvisor``); core passes them through unread.
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    #: The effective bottle (after ``extends:``), JSON form: recorded with
    #: the bottle's state so a snapshot keeps the policy it ran with.
    bottle_manifest: Mapping[str, Any] | None = field(default=None, repr=False)
    #: The snapshot this bottle was resumed from, if any.
    snapshot: str | None = None
    #: cgroup limits per container (manifest ``resources:``, with defaults).
    resources: Resources = field(default_factory=Resources)

    def bundle_env(self) -> dict[str, Secret]:
        """The sidecar bundle's environment: every credential slot. init hands
        each prefix to the one daemon that owns it (egress, git-gate)."""
        return {**self.egress_tokens, **self.gitgate_secrets}

    @property
    def proxy_url(self) -> str:
        return f"http://{LOOPBACK}:{PROXY_PORT}"

    @property
    def supervise_url(self) -> str | None:
        return f"http://{LOOPBACK}:{MCP_PORT}/mcp" if self.supervise else None

    def summary(self) -> dict[str, Any]:
        """The plan as the preflight and ``--dry-run --json`` show it: no values of env."""
        routes = [r.host for r in self.egress_config.routes] if self.egress_config else []
        return {
            "slug": self.slug,
            "agent": self.agent,
            "bottle": self.bottle,
            "backend": self.backend,
            "provider": self.provider,
            "label": self.label,
            "cwd": str(self.cwd) if self.cwd else None,
            "agent_image": self.agent_image or "(built at launch)",
            "env": sorted(self.agent_env),
            "egress_routes": routes,
            "credential_slots": sorted(self.egress_tokens),
            "git_gate_repos": [r.name for r in self.gitgate.repos] if self.gitgate else [],
            "supervise": self.supervise,
            "extra_hosts": dict(self.extra_hosts),
            **self.backend_options,
            "resources": {
                name: getattr(self.resources, name).describe()
                for name in ("agent", "bundle", "relay")
            },
        }


def new_slug(agent: str) -> str:
    return f"{agent[:40]}-{_random.token_hex(3)}"


def check_slug(slug: str) -> str:
    if not _SLUG_RE.match(slug):
        raise BotBottleError(f"{slug!r} is not a bottle slug")
    return slug


def proxy_env(proxy_url: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = env[name.lower()] = proxy_url
    # Loopback is where git-gate and supervise are: never through the proxy.
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
    return env


def ca_env(path: str = GUEST_CA_PATH) -> dict[str, str]:
    return dict.fromkeys(CA_ENV_VARS, path)


def agent_env(bottle_env: Mapping[str, Secret], provider_plan: ProviderPlan) -> dict[str, Secret]:
    """The agent's environment: the bottle's, then the provider's
    placeholders, then the proxy and CA variables (which nothing overrides:
    every connection goes through egress)."""
    env: dict[str, Secret] = dict(bottle_env)
    for name, value in provider_plan.env.items():
        env[name] = Secret(value)
    for name, value in {**proxy_env(f"http://{LOOPBACK}:{PROXY_PORT}"), **ca_env()}.items():
        env[name] = Secret(value)
    return env


def git_config(gate: GitGatePlan, agent: ResolvedAgent) -> tuple[tuple[str, str], ...]:
    """``git config --global`` entries: git-gate's ``insteadOf`` rewrites,
    then the agent's ``git_user``."""
    entries = list(gate.git_config_entries())
    user = agent.git_user
    if user is not None:
        if user.name:
            entries.append(("user.name", user.name))
        if user.email:
            entries.append(("user.email", user.email))
    return tuple(entries)


# -- the plan -----------------------------------------------------------------------


def make_plan(
    agent: ResolvedAgent,
    provider: AgentProvider,
    *,
    backend: str,
    host: PluginHost | None = None,
    label: str | None = None,
    cwd: Path | None = None,
    host_env: Mapping[str, str],
    ask: Callable[[str], str] | None = None,
    backend_options: Mapping[str, Any] | None = None,
    slug: str | None = None,
) -> BottlePlan:
    """Plan one launch of ``agent`` with its bottle's ``provider``.

    ``host`` supplies the installed plugins (DLP detectors: a route without a
    ``dlp`` selection uses every installed one); without it no detector runs.
    """
    from bot_bottle.egress.from_manifest import egress_from_manifest
    from bot_bottle.gitgate.from_manifest import gate_repo_specs
    from bot_bottle.gitgate.plan import KNOWN_SECRET_PREFIX as GITGATE_SECRET_PREFIX
    from bot_bottle.gitgate.plan import plan_git_gate
    from bot_bottle.imagebuild import base_image_name, extra_ca_from_env
    from bot_bottle.manifest import resolve_env
    from bot_bottle.plugins import PluginHost
    from bot_bottle.provider_kit import agent_image_spec as agent_image_spec_for

    bottle = agent.bottle
    options = agent.resolved_bottle.provider_options
    if options is None:
        options = provider.options_model()
    provider_plan = provider.plan(options, host_env=host_env)
    agent_image_spec = agent_image_spec_for(
        bottle.agent_provider.template,
        provider.image(options),
        base_image=base_image_name(host_env),
        extra_ca=extra_ca_from_env(host_env),
    )

    resolved = resolve_env(bottle.env, host_env=host_env, **({"ask": ask} if ask else {}))
    slug = check_slug(slug) if slug else new_slug(agent.name)

    egress = egress_from_manifest(
        bottle,
        host=host if host is not None else PluginHost(environ={}, load_entry_points=False),
        host_env=host_env,
        provider_routes=provider_plan.routes,
        provider_name=bottle.agent_provider.template,
        env_secrets=resolved,
    )
    gate = plan_git_gate(gate_repo_specs(bottle), gate_host=LOOPBACK, gate_port=GIT_PORT)

    # The host's HOME as the caller sees it (host_env), like every other
    # host value the plan reads.
    skills_root = provider.host_skills_dir(host_env)
    upstream_ca = egress.upstream_ca
    return BottlePlan(
        slug=slug,
        agent=agent.name,
        label=label,
        cwd=cwd,
        backend=backend,
        bottle=bottle.name,
        provider=bottle.agent_provider.template,
        provider_plan=provider_plan,
        agent_image_spec=agent_image_spec,
        agent_env=agent_env(resolved, provider_plan),
        egress_config=egress.config,
        egress_tokens=egress.daemon_env(),
        gitgate_secrets=(
            {f"{GITGATE_SECRET_PREFIX}{i}": v for i, v in enumerate(egress.known_secrets.values())}
            if gate.enabled
            else {}
        ),
        gitgate=gate,
        supervise=bottle.supervise,
        extra_hosts=bottle.sidecar_extra_hosts(),
        upstream_ca=upstream_ca,
        skills=tuple(skills_root / s for s in agent.skills),
        prompt=agent.prompt,
        git_config=git_config(gate, agent),
        backend_options=dict(backend_options or {}),
        bottle_manifest=bottle.model_dump(mode="json"),
        resources=bottle.resources,
    )
