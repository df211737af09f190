"""The manifest: bottles and agents as Markdown files with YAML frontmatter.

Files (see :mod:`bot_bottle.manifest.store` for discovery and the trust
boundary)::

    ~/.bot-bottle/bottles/<name>.md        bottles (home only)
    ~/.bot-bottle/agents/<name>.md         agents
    <repo>/.bot-bottle/agents/<name>.md    agents a repository ships

The API other components use::

    from bot_bottle.manifest import Manifest, load_agent
    agent = load_agent("reviewer", home=home, repo=repo, host=plugin_host)
    agent.bottle            # Bottle: effective, after extends:
    agent.prompt            # the Markdown body
    agent.git_identity      # name/email with (agent)/(bottle) provenance
    agent.skills            # bottle's then agent's
    agent.resolved_bottle.provider_options   # the provider's options_model
    agent.resolved_bottle.key_options        # repo name -> key options
    resolve_env(agent.bottle.env, host_env=os.environ)  # -> dict[str, Secret]

Errors: every problem is a :class:`ManifestError` naming file and line;
an unknown agent name is :class:`UnknownAgentError`.

Bottle fields (:class:`BottleFile`; :class:`Bottle` is the effective one)
----------------------------------------------------------------------------
``extends``         name of a parent bottle
``agent_provider``  ``template`` (provider plugin name) + that provider's options
``env``             NAME -> literal | ``?prompt`` | text with ``${HOST_VAR}``
``skills``          skill directory names (``~/.claude/skills/<name>``)
``git_user``        ``name``, ``email``
``git_gate.repos``  ``name``, ``url`` (ssh://user@host[:port]/path, parsed to
                    :class:`SshUrl`), ``host_key`` (pinned), ``key``
                    (``{provider: static, path}`` or a provisioner plugin +
                    options), ``extra_hosts``. The effective bottle exposes
                    them as ``Bottle.repos`` (:class:`GitRepo`).
``egress``          ``log``, ``routes``, ``upstream_ca`` (below)
``supervise``       bool, default true
``extra_hosts``     host name -> IP address pinned in the bottle's sidecars
``resources``       cgroup limits per container: ``agent``, ``bundle``,
                    ``relay``, each ``memory`` ("4g"), ``pids``, ``cpus``;
                    defaults in :data:`models.DEFAULT_LIMITS`, ``null`` lifts one

Egress route model (for the egress sidecar's rendered config)
----------------------------------------------------------------
``Bottle.egress`` is an :class:`Egress`:

* ``log``: ``"off" | "blocks" | "full"`` (default ``"blocks"``).
* ``upstream_ca``: ``str | None`` — host path of an extra PEM CA bundle egress
  trusts for upstream TLS *in addition to* the system bundle.
* ``routes``: ``list[Route]``, host names unique. Each :class:`Route`:

  - ``host``: ``str`` — exact host name, lower-cased (or an IP literal); no
    wildcards, no scheme, no port.
  - ``auth``: :class:`Auth` ``| None`` — ``scheme``: ``"Bearer" | "token"``;
    ``token_ref``: name of the *host* environment variable holding the token
    (the value is read at plan time, never stored in the manifest).
  - ``matches``: ``list[Match]`` — empty means the whole host. A request
    passes if any entry matches; within an entry every given part must:

    * ``paths``: ``list[PathMatch]`` — ``type``: ``"prefix"`` (default) |
      ``"exact"`` | ``"regex"``; ``value``: ``str`` (prefix/exact start with
      ``/``; regex compiled with RE2 at load). Any path in the list matches.
    * ``methods``: ``list[str]`` — upper-case; any method in the list matches.
    * ``headers``: ``list[HeaderMatch]`` — ``name``, ``value``, ``type``:
      ``"exact"`` (default) | ``"regex"`` (RE2). Every header must match.

  - ``dlp``: :class:`RouteDlp` — ``outbound_detectors`` /
    ``inbound_detectors``: ``None`` (key absent: every installed detector),
    ``False`` (scanning off) or ``list[str]`` of installed detector names.
  - ``git``: :class:`RouteGit` — ``fetch``: ``bool`` (default false) permits
    ``git-upload-pack``; ``git-receive-pack`` is always refused.
  - ``ports``: ``list[int]`` — ports the host may be reached on (default: 443, 80).
  - ``websocket``: ``bool`` (default false) — allow WebSocket upgrades.

Agent fields (:class:`AgentFile`)
---------------------------------
``bottle`` (required), ``skills`` (added to the bottle's), ``git_user``
(per-field overlay on the bottle's); Claude Code sub-agent fields ``name``,
``description``, ``model``, ``color``, ``memory``, ``tools`` are accepted and
ignored. Bottle settings in an agent are refused with a message that says so.

``extends:`` merge rules: ``env`` dict merge (child wins); ``git_user`` per
field; ``git_gate.repos`` merged by ``name`` field by field (child wins;
``repos: []`` drops inherited repos); every other key replaced when the child
declares it.
"""

from __future__ import annotations

from bot_bottle.manifest.env import EnvKind, env_kind, host_vars, resolve_env
from bot_bottle.manifest.errors import ManifestError, Problem
from bot_bottle.manifest.models import (
    AgentFile,
    AgentProviderSpec,
    Auth,
    Bottle,
    BottleFile,
    Egress,
    GitRepo,
    GitUser,
    HeaderMatch,
    KeySpec,
    Match,
    PathMatch,
    RepoEntry,
    Route,
    RouteDlp,
    RouteGit,
    SshUrl,
    StaticKeyOptions,
)
from bot_bottle.manifest.store import (
    AgentRef,
    GitIdentity,
    Manifest,
    ResolvedAgent,
    ResolvedBottle,
    UnknownAgentError,
    find_repo,
    load_agent,
    validate_file,
)

__all__ = [
    "AgentFile",
    "AgentProviderSpec",
    "AgentRef",
    "Auth",
    "Bottle",
    "BottleFile",
    "Egress",
    "EnvKind",
    "GitIdentity",
    "GitRepo",
    "GitUser",
    "HeaderMatch",
    "KeySpec",
    "Manifest",
    "ManifestError",
    "Match",
    "PathMatch",
    "Problem",
    "RepoEntry",
    "ResolvedAgent",
    "ResolvedBottle",
    "Route",
    "RouteDlp",
    "RouteGit",
    "SshUrl",
    "StaticKeyOptions",
    "UnknownAgentError",
    "env_kind",
    "find_repo",
    "host_vars",
    "load_agent",
    "resolve_env",
    "validate_file",
]
