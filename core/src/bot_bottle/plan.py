"""Planning a launch: a resolved agent becomes a :class:`BottlePlan`. PURE.

``make_plan`` reads the manifest's effective bottle, the provider's plan and
the host environment (``${HOST_VAR}`` values, route tokens; ``?prompt``
values are asked through ``ask``), and computes everything a backend needs:
the agent's environment, the egress config and its token slots, the git-gate
plan, whether supervise runs, the slug. It writes nothing, starts nothing and
contacts nothing: ``--dry-run`` shows exactly this.

Every value that may be a credential is a :class:`~bot_bottle.secrets.Secret`
(repr masked); the plan can be printed and logged.

How the agent reaches its sidecars: at ``<agent_host>:<port>``, where
``agent_host`` is what the backend's ``Backend.agent_endpoint_host`` names
for the bottle. On Docker that is 127.0.0.1: the agent has loopback only (no
route and no DNS, so nothing leaves except through the sidecars) and its
endpoints are relayed into its own network namespace. A backend whose agent
is a VM of its own names another address (smolmachines: the bottle's
loopback alias) or a name it pins in the agent's /etc/hosts (Apple
container). Every URL the agent sees (proxy variables, git-gate
``insteadOf`` rewrites, the MCP URL) names that host and nothing else.
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
#: Where every sidecar daemon listens inside the bundle, and the agent-side
#: endpoint host a backend names unless it overrides
#: ``Backend.agent_endpoint_host``.
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
    #: Where the agent reaches its proxy, git-gate and supervise endpoints
    #: (``Backend.agent_endpoint_host``): every agent-side URL names it.
    agent_host: str = LOOPBACK
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
        return endpoint_url(self.agent_host, PROXY_PORT)

    @property
    def supervise_url(self) -> str | None:
        return f"{endpoint_url(self.agent_host, MCP_PORT)}/mcp" if self.supervise else None

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


def endpoint_url(host: str, port: int) -> str:
    """``http://host:port`` (the host is an IPv4 address or a name: make_plan
    refuses anything else)."""
    return f"http://{host}:{port}"


def proxy_env(proxy_url: str, agent_host: str = LOOPBACK) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ("HTTP_PROXY", "HTTPS_PROXY"):
        env[name] = env[name.lower()] = proxy_url
    # The endpoint host is where git-gate and supervise are: never through
    # the proxy (loopback neither).
    hosts = ["localhost", "127.0.0.1", "::1"]
    if agent_host not in hosts:
        hosts.append(agent_host)
    env["NO_PROXY"] = env["no_proxy"] = ",".join(hosts)
    return env


def ca_env(path: str = GUEST_CA_PATH) -> dict[str, str]:
    return dict.fromkeys(CA_ENV_VARS, path)


def agent_env(
    bottle_env: Mapping[str, Secret], provider_plan: ProviderPlan, agent_host: str = LOOPBACK
) -> dict[str, Secret]:
    """The agent's environment: the bottle's, then the provider's
    placeholders, then the proxy and CA variables (which nothing overrides:
    every connection goes through egress)."""
    env: dict[str, Secret] = dict(bottle_env)
    for name, value in provider_plan.env.items():
        env[name] = Secret(value)
    proxy = proxy_env(endpoint_url(agent_host, PROXY_PORT), agent_host)
    for name, value in {**proxy, **ca_env()}.items():
        env[name] = Secret(value)
    return env


def _agent_host(host: str, backend: str) -> str:
    """A backend plugin's endpoint host, checked: it goes into URLs and
    ``NO_PROXY`` unquoted."""
    from bot_bottle.gitgate.spec import check_host

    try:
        checked = check_host(host)
    except BotBottleError:
        checked = None
    if checked is None or checked.startswith("["):
        raise BotBottleError(
            f"backend {backend!r} names {host!r} as the agent's endpoint host: "
            "not an IPv4 address or a host name",
            hint="a fault of the backend plugin: report it to its authors",
        )
    return checked


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
    endpoint_host: Callable[[str], str] | None = None,
) -> BottlePlan:
    """Plan one launch of ``agent`` with its bottle's ``provider``.

    ``host`` supplies the installed plugins (DLP detectors: a route without a
    ``dlp`` selection uses every installed one); without it no detector runs.
    ``endpoint_host`` is the backend's ``agent_endpoint_host`` (slug -> the
    host the agent reaches its endpoints at); without it, 127.0.0.1.
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
    agent_host = _agent_host(endpoint_host(slug), backend) if endpoint_host else LOOPBACK
    gate = plan_git_gate(gate_repo_specs(bottle), gate_host=agent_host, gate_port=GIT_PORT)

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
        agent_env=agent_env(resolved, provider_plan, agent_host),
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
        agent_host=agent_host,
        skills=tuple(skills_root / s for s in agent.skills),
        prompt=agent.prompt,
        git_config=git_config(gate, agent),
        backend_options=dict(backend_options or {}),
        bottle_manifest=bottle.model_dump(mode="json"),
        resources=bottle.resources,
    )
