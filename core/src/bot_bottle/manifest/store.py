"""Finding manifest files, the trust boundary, and ``extends:``.

Where files come from:

* ``<home>/bottles/<name>.md`` — bottles, from the operator's home only;
* ``<home>/agents/<name>.md`` — the operator's agents;
* ``<repo>/.bot-bottle/agents/<name>.md`` — agents a repository ships.

Trust boundary: bottles carry credentials, egress routes and
git remotes, so they load only from ``<home>``. A repository's
``.bot-bottle/bottles/`` is never read (a warning says so): a cloned repo
cannot define a bottle nor override one. Agent files cannot declare any
bottle setting at all, so a repo agent can pick one of the operator's
bottles by name (the preflight shows which) but cannot add a credential,
an env var, a route or a remote. When a home agent and a repo agent share a
name, the home agent wins: a cloned repo must not replace the agent the
operator runs by name.

Laziness: :meth:`Manifest.agents` lists file names only. Resolving one
agent parses that agent's file and its bottle chain and nothing else, so a
broken file elsewhere only matters when that agent is used. Parsed bottle
files and resolved chains are cached per :class:`Manifest`, so bottles
shared by many agents (or a shared ancestor) are parsed once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.document import Document, read_document
from bot_bottle.manifest.errors import ManifestError, Problem
from bot_bottle.manifest.models import (
    NAME_RE,
    AgentFile,
    AgentProviderSpec,
    Bottle,
    BottleFile,
    Egress,
    GitRepo,
    GitUser,
    Resources,
)
from bot_bottle.manifest.parse import PluginOptions, parse_agent, parse_bottle_checked

if TYPE_CHECKING:
    from bot_bottle.plugins import PluginHost

Source = Literal["home", "repo"]
SUFFIX = ".md"
REPO_DIR = ".bot-bottle"
#: A chain longer than this is a mistake, not a design.
MAX_EXTENDS_DEPTH = 32


class UnknownAgentError(BotBottleError):
    """No agent file has the requested name."""


@dataclass(frozen=True)
class AgentRef:
    """An agent file found by name, not yet parsed."""

    name: str
    source: Source
    path: Path
    #: Set on a repo agent hidden by a home agent of the same name.
    shadowed_by: Path | None = None

    @property
    def name_error(self) -> str | None:
        if NAME_RE.match(self.name):
            return None
        return (
            f"file name {self.path.name!r} is not a valid agent name: use lower-case letters, "
            "digits and '-', starting with a letter, then '.md'"
        )


@dataclass(frozen=True)
class GitIdentity:
    """The git identity an agent commits with, and where each field came from."""

    name: str | None = None
    name_from: Literal["agent", "bottle"] | None = None
    email: str | None = None
    email_from: Literal["agent", "bottle"] | None = None

    def summary(self) -> str:
        bits = []
        if self.name:
            bits.append(f"{self.name} ({self.name_from})")
        if self.email:
            bits.append(f"<{self.email}> ({self.email_from})")
        return " ".join(bits) or "(image default)"


@dataclass(frozen=True)
class ResolvedBottle:
    """An effective bottle with its plugin options validated."""

    bottle: Bottle
    #: The provider's validated ``options_model`` instance.
    provider_options: BaseModel | None
    #: repo name -> validated key options (``StaticKeyOptions`` for ``static``).
    key_options: Mapping[str, BaseModel]
    #: The bottle files of the chain, child first.
    files: tuple[Path, ...]


@dataclass(frozen=True)
class ResolvedAgent:
    """Everything the manifest says about one agent, ready for planning."""

    name: str
    source: Source
    path: Path
    agent: AgentFile
    #: The Markdown body: the agent's system prompt.
    prompt: str
    resolved_bottle: ResolvedBottle
    git_identity: GitIdentity
    #: Bottle skills, then the agent's, without repeats.
    skills: tuple[str, ...]

    @property
    def bottle(self) -> Bottle:
        return self.resolved_bottle.bottle

    @property
    def files(self) -> tuple[Path, ...]:
        """The agent file, then the bottle chain (child first)."""
        return (self.path, *self.resolved_bottle.files)

    @property
    def git_user(self) -> GitUser | None:
        """The effective git user (agent fields over the bottle's)."""
        gi = self.git_identity
        if not (gi.name or gi.email):
            return None
        return GitUser(name=gi.name, email=gi.email)


@dataclass
class _ParsedBottle:
    doc: Document
    model: BottleFile
    plugins: PluginOptions


@dataclass
class _Layer:
    """The merged state of a bottle chain (root first) before finalising."""

    chain: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    agent_provider: AgentProviderSpec | None = None
    provider_options: BaseModel | None = None
    env: dict[str, str] = field(default_factory=dict)
    skills: list[str] = field(default_factory=list)
    git_user: GitUser | None = None
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: repo name -> (document, index) of the entry that last touched it
    repo_origin: dict[str, tuple[Document, int]] = field(default_factory=dict)
    key_options: dict[str, BaseModel] = field(default_factory=dict)
    egress: Egress = field(default_factory=Egress)
    supervise: bool = True
    extra_hosts: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)


def find_repo(start: Path, home: Path) -> Path | None:
    """The repository ``start`` is in: the nearest ancestor holding ``.git``.

    A repository whose ``.bot-bottle`` *is* the operator's home (a dotfiles
    repo in ``$HOME``) is no repository for our purposes: its files are
    already the home files.
    """
    try:
        home_resolved = home.resolve()
    except OSError:
        home_resolved = home
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            try:
                if (candidate / REPO_DIR).resolve() == home_resolved:
                    return None
            except OSError:
                return None
            return candidate
    return None


def _md_names(directory: Path) -> dict[str, Path]:
    """``name -> path`` of the ``*.md`` files in ``directory`` (names only)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise BotBottleError(
            f"cannot list {directory}: {exc.strerror or exc}",
            hint="check the directory's permissions",
        ) from None
    out: dict[str, Path] = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(SUFFIX):
            continue
        out[entry.name[: -len(SUFFIX)]] = Path(entry.path)
    return dict(sorted(out.items()))


class Manifest:
    """The manifest files of one home (and optionally one repository).

    ``host`` is the plugin host used to check plugin-owned options; by
    default the installed plugins are loaded the first time a bottle needs
    them. Tests pass the ``bot_bottle_host`` fixture with fakes registered.
    """

    def __init__(
        self, *, home: Path, repo: Path | None = None, host: PluginHost | None = None
    ) -> None:
        self.home = home
        self.repo = repo
        self._host = host
        self._bottles: dict[str, _ParsedBottle] = {}
        self._layers: dict[str, _Layer] = {}
        self._resolved: dict[str, ResolvedBottle] = {}
        self._failed: dict[str, ManifestError] = {}
        #: How many files were parsed: laziness is tested, not assumed.
        self.parsed_files: list[Path] = []

    @classmethod
    def discover(
        cls,
        *,
        cwd: Path | None = None,
        host: PluginHost | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Manifest:
        """The operator's home (``BOT_BOTTLE_HOME`` or ``~/.bot-bottle``) and
        the repository ``cwd`` is in, if any."""
        from bot_bottle.paths import home_dir

        home = home_dir(dict(environ) if environ is not None else None)
        try:
            start = (cwd or Path.cwd()).absolute()
        except OSError:  # the working directory was deleted under us
            return cls(home=home, repo=None, host=host)
        repo = find_repo(start, home)
        return cls(home=home, repo=repo, host=host)

    # -- places ------------------------------------------------------------------

    @property
    def bottles_dir(self) -> Path:
        return self.home / "bottles"

    @property
    def agents_dir(self) -> Path:
        return self.home / "agents"

    @property
    def repo_agents_dir(self) -> Path | None:
        return self.repo / REPO_DIR / "agents" if self.repo else None

    @property
    def repo_bottles_dir(self) -> Path | None:
        return self.repo / REPO_DIR / "bottles" if self.repo else None

    @property
    def host(self) -> PluginHost:
        if self._host is None:
            from bot_bottle.plugins import PluginHost

            self._host = PluginHost().load()
        return self._host

    def warnings(self, agent: str | None = None) -> list[str]:
        """Things the operator should know that are not errors: an ignored
        repo ``bottles/`` directory, and repo agents hidden by home agents
        (only ``agent``'s when given, so that using one agent does not scan
        every file)."""
        out = []
        rb = self.repo_bottles_dir
        if rb is not None and rb.is_dir():
            out.append(
                f"ignoring {rb}: bottles load only from {self.bottles_dir} "
                "(a repository may ship agents, never bottles)"
            )
        if agent is not None:
            refs = [self._ref(agent, "repo")] if NAME_RE.match(agent) else []
            shadowed = [r for r in refs if r is not None and r.shadowed_by is not None]
        else:
            shadowed = [r for r in self.agents() if r.shadowed_by is not None]
        for ref in shadowed:
            out.append(
                f"ignoring repo agent {ref.path}: the home agent {ref.shadowed_by} "
                "has the same name and wins"
            )
        return out

    # -- listing (names only) ---------------------------------------------------------

    def agents(self) -> list[AgentRef]:
        """Every agent file, home first; nothing is parsed."""
        home = _md_names(self.agents_dir)
        refs = [AgentRef(name, "home", path) for name, path in home.items()]
        if self.repo_agents_dir is not None:
            for name, path in _md_names(self.repo_agents_dir).items():
                refs.append(AgentRef(name, "repo", path, shadowed_by=home.get(name)))
        return refs

    def bottle_names(self) -> list[str]:
        return [n for n in _md_names(self.bottles_dir) if NAME_RE.match(n)]

    def _ref(self, name: str, source: Source) -> AgentRef | None:
        home_path = self.agents_dir / f"{name}{SUFFIX}"
        if source == "home":
            return AgentRef(name, "home", home_path) if home_path.is_file() else None
        if self.repo_agents_dir is None:
            return None
        path = self.repo_agents_dir / f"{name}{SUFFIX}"
        if not path.is_file():
            return None
        return AgentRef(name, "repo", path, home_path if home_path.is_file() else None)

    def find_agent(self, name: str) -> AgentRef:
        """The agent file called ``name`` (home wins). Looks up the file
        directly: the cost does not depend on how many other agents exist."""
        if NAME_RE.match(name):
            sources: tuple[Source, ...] = ("home", "repo")
            for source in sources:
                ref = self._ref(name, source)
                if ref is not None and ref.shadowed_by is None:
                    return ref
        names = sorted({r.name for r in self.agents()})
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"{self.agents_dir}" + (
            f" or {self.repo_agents_dir}" if self.repo_agents_dir else ""
        )
        raise UnknownAgentError(
            f"no agent named {name!r}{maybe}; available: {', '.join(names) or 'none'}",
            hint=f"agents are {where}/<name>.md; 'bot-bottle init' writes examples",
        )

    # -- resolving -------------------------------------------------------------------------

    def agent(self, name: str) -> ResolvedAgent:
        """Resolve the agent called ``name`` (home wins over repo)."""
        return self.resolve(self.find_agent(name))

    def resolve(self, ref: AgentRef) -> ResolvedAgent:
        """Parse ``ref``'s file and its bottle chain; check everything."""
        if ref.name_error:
            raise ManifestError.at(ref.path, 1, ref.name_error)
        if ref.source == "repo" and self.repo is not None:
            self.check_inside_repo(ref.path, self.repo)
        doc = self._read(ref.path)
        agent = parse_agent(doc)
        resolved = self._resolved_bottle(agent.bottle, doc, ("bottle",))
        bottle = resolved.bottle
        identity = _overlay_identity(bottle.git_user, agent.git_user)
        skills = tuple(dict.fromkeys([*bottle.skills, *agent.skills]))
        return ResolvedAgent(
            name=ref.name,
            source=ref.source,
            path=ref.path,
            agent=agent,
            prompt=doc.body.strip("\n"),
            resolved_bottle=resolved,
            git_identity=identity,
            skills=skills,
        )

    @staticmethod
    def check_inside_repo(path: Path, repo: Path) -> None:
        """A repo agent must be a file of the repo: a symlink committed to
        the repo could otherwise make bot-bottle read (and quote in errors)
        any file of the operator's, such as a bottle."""
        try:
            inside = path.resolve().is_relative_to(repo.resolve())
        except OSError:
            inside = False
        if not inside:
            raise ManifestError.at(
                path,
                1,
                "this repo agent is a symlink to a file outside the repository; refused",
                hint="repo agents must be files of the repository itself",
            )

    def bottle(self, name: str) -> ResolvedBottle:
        """Resolve a bottle by name (for ``validate`` and tooling)."""
        return self._resolved_bottle(name, None, ())

    def _read(self, path: Path) -> Document:
        self.parsed_files.append(path)
        return read_document(path)

    def _resolved_bottle(
        self, name: str, ref_doc: Document | None, ref_loc: tuple[str, ...]
    ) -> ResolvedBottle:
        if name in self._resolved:
            return self._resolved[name]
        if name in self._failed:
            failed = self._failed[name]
            raise ManifestError(failed.problems, hint=failed.hint)
        try:
            layer = self._layer(name, [], ref_doc, ref_loc)
            resolved = self._finalise(name, layer)
        except ManifestError as exc:
            # A broken bottle shared by many agents is parsed once: remember
            # failures located in bottle files (not those located in the
            # agent that referred to a missing bottle: they differ per agent).
            if all(p.file.parent == self.bottles_dir for p in exc.problems):
                self._failed[name] = exc
            raise
        self._resolved[name] = resolved
        return resolved

    def _bottle_file(
        self, name: str, ref_doc: Document | None, ref_loc: tuple[str, ...]
    ) -> _ParsedBottle:
        if name in self._bottles:
            return self._bottles[name]
        path = self.bottles_dir / f"{name}{SUFFIX}"
        if not NAME_RE.match(name):
            # Names from files are validated already; this guards the API
            # (a name is a file name: no '/', no '..').
            raise ManifestError.at(path, 1, f"{name!r} is not a valid bottle name")
        if not path.is_file():
            available = ", ".join(self.bottle_names()) or "none"
            message = f"bottle {name!r} does not exist (available: {available})"
            hint = f"bottles are {self.bottles_dir}/<name>.md"
            rb = self.repo_bottles_dir
            if rb is not None and (rb / f"{name}{SUFFIX}").exists():
                hint = (
                    f"{rb / (name + SUFFIX)} is ignored: bottles load only from "
                    f"{self.bottles_dir} (trust boundary)"
                )
            if ref_doc is None:
                raise ManifestError.at(path, 1, message, hint=hint)
            raise ManifestError.at(
                ref_doc.path,
                ref_doc.line_of(ref_loc),
                message,
                where=".".join(ref_loc),
                hint=hint,
            )
        doc = self._read(path)
        model, plugins = parse_bottle_checked(doc, self.host)
        parsed = _ParsedBottle(doc, model, plugins)
        self._bottles[name] = parsed
        return parsed

    def _layer(
        self, name: str, stack: list[str], ref_doc: Document | None, ref_loc: tuple[str, ...]
    ) -> _Layer:
        if name in self._layers:
            return self._layers[name]
        parsed = self._bottle_file(name, ref_doc, ref_loc)
        model, doc = parsed.model, parsed.doc
        if model.extends is None:
            parent = _Layer()
        else:
            line = doc.line_of(("extends",))
            if model.extends == name:
                raise ManifestError.at(
                    doc.path, line, f"bottle {name!r} extends itself", where="extends"
                )
            chain = [*stack, name]
            if model.extends in chain:
                cycle = [*chain[chain.index(model.extends) :], model.extends]
                raise ManifestError.at(
                    doc.path,
                    line,
                    "extends cycle: " + " -> ".join(cycle),
                    where="extends",
                    hint="one bottle in the cycle must not extend another",
                )
            if len(chain) >= MAX_EXTENDS_DEPTH:
                raise ManifestError.at(
                    doc.path,
                    line,
                    f"extends chain is deeper than {MAX_EXTENDS_DEPTH}: " + " -> ".join(chain),
                    where="extends",
                )
            parent = self._layer(model.extends, chain, doc, ("extends",))
        layer = _merge(parent, name, parsed)
        self._layers[name] = layer
        return layer

    def _finalise(self, name: str, layer: _Layer) -> ResolvedBottle:
        top = self._bottles[name].doc
        problems: list[Problem] = []
        if layer.agent_provider is None:
            problems.append(
                Problem(
                    top.path,
                    1,
                    f"bottle {name!r} sets no agent_provider (nor does any bottle it extends); "
                    "add 'agent_provider: {template: <provider>}'",
                )
            )
        repos: list[GitRepo] = []
        for repo_name, fields in layer.repos.items():
            missing = [f for f in ("url", "host_key", "key") if fields.get(f) is None]
            doc, index = layer.repo_origin[repo_name]
            loc = ("git_gate", "repos", index)
            if missing:
                problems.append(
                    Problem(
                        doc.path,
                        doc.line_of(loc),
                        f"repo {repo_name!r} has no {', '.join(missing)} (set here nor in any "
                        "bottle it extends)"
                        + (
                            "; host_key pins the upstream's SSH key: 'ssh-keyscan -t ed25519 HOST'"
                            if "host_key" in missing
                            else ""
                        ),
                        doc.where(loc),
                    )
                )
                continue
            repos.append(
                GitRepo(
                    name=repo_name,
                    url=fields["url"],
                    host_key=fields["host_key"],
                    key=fields["key"],
                    extra_hosts=fields.get("extra_hosts") or {},
                )
            )
        pins: dict[str, tuple[str, str]] = {
            h: (ip, "extra_hosts") for h, ip in layer.extra_hosts.items()
        }
        for repo in repos:
            for host, ip in repo.extra_hosts.items():
                other = pins.get(host)
                if other is not None and other[0] != ip:
                    doc, index = layer.repo_origin[repo.name]
                    problems.append(
                        Problem(
                            doc.path,
                            doc.line_of(("git_gate", "repos", index, "extra_hosts", host)),
                            f"{host!r} is pinned to {other[0]} by {other[1]} and to {ip} by "
                            f"repo {repo.name!r}; the sidecars share one hosts file",
                            doc.where(("git_gate", "repos", index, "extra_hosts", host)),
                        )
                    )
                pins.setdefault(host, (ip, f"repo {repo.name!r}"))
        if problems or layer.agent_provider is None:
            raise ManifestError(problems)
        bottle = Bottle(
            name=name,
            chain=list(reversed(layer.chain)),
            agent_provider=layer.agent_provider,
            env=dict(layer.env),
            skills=list(layer.skills),
            git_user=layer.git_user,
            repos=repos,
            egress=layer.egress,
            supervise=layer.supervise,
            extra_hosts=dict(layer.extra_hosts),
            resources=layer.resources,
        )
        return ResolvedBottle(
            bottle=bottle,
            provider_options=layer.provider_options,
            key_options={r.name: layer.key_options[r.name] for r in repos},
            files=tuple(reversed(layer.files)),
        )


def _merge(parent: _Layer, name: str, parsed: _ParsedBottle) -> _Layer:
    """Lay one bottle file over its parent's merged state.

    env: dict merge, child wins. git_user: per field. git_gate repos: by
    ``name``, field by field, child wins (``repos: []`` clears inherited
    repos). Everything else: replaced when the child declares it.
    """
    child, doc = parsed.model, parsed.doc
    declared = child.model_fields_set
    out = _Layer(
        chain=[*parent.chain, name],
        files=[*parent.files, doc.path],
        agent_provider=parent.agent_provider,
        provider_options=parent.provider_options,
        env=dict(parent.env),
        skills=list(parent.skills),
        git_user=parent.git_user,
        repos={k: dict(v) for k, v in parent.repos.items()},
        repo_origin=dict(parent.repo_origin),
        key_options=dict(parent.key_options),
        egress=parent.egress,
        supervise=parent.supervise,
        extra_hosts=dict(parent.extra_hosts),
        resources=parent.resources,
    )
    if "agent_provider" in declared:
        out.agent_provider = child.agent_provider
        out.provider_options = parsed.plugins.provider
    if "env" in declared:
        out.env.update(child.env)
    if "skills" in declared:
        out.skills = list(child.skills)
    if "git_user" in declared and child.git_user is not None:
        out.git_user = _overlay_user(parent.git_user, child.git_user)
    if "git_gate" in declared:
        if "repos" in child.git_gate.model_fields_set and not child.git_gate.repos:
            out.repos, out.repo_origin, out.key_options = {}, {}, {}
        for index, repo in enumerate(child.git_gate.repos):
            fields = out.repos.setdefault(repo.name, {})
            for key in repo.model_fields_set - {"name"}:
                fields[key] = getattr(repo, key)
            out.repo_origin[repo.name] = (doc, index)
            if repo.name in parsed.plugins.keys:
                out.key_options[repo.name] = parsed.plugins.keys[repo.name]
    if "egress" in declared:
        out.egress = child.egress
    if "supervise" in declared:
        out.supervise = child.supervise
    if "extra_hosts" in declared:
        out.extra_hosts = dict(child.extra_hosts)
    if "resources" in declared:
        out.resources = parent.resources.overlay(child.resources)
    return out


def _overlay_user(base: GitUser | None, top: GitUser) -> GitUser:
    if base is None:
        return top
    return GitUser(name=top.name or base.name, email=top.email or base.email)


def _overlay_identity(bottle: GitUser | None, agent: GitUser | None) -> GitIdentity:
    name = email = None
    name_from: Literal["agent", "bottle"] | None = None
    email_from: Literal["agent", "bottle"] | None = None
    layers: tuple[tuple[Literal["agent", "bottle"], GitUser | None], ...] = (
        ("bottle", bottle),
        ("agent", agent),
    )
    for source, user in layers:
        if user is None:
            continue
        if user.name:
            name, name_from = user.name, source
        if user.email:
            email, email_from = user.email, source
    return GitIdentity(name, name_from, email, email_from)


def load_agent(
    name: str,
    *,
    home: Path | None = None,
    repo: Path | None = None,
    host: PluginHost | None = None,
) -> ResolvedAgent:
    """Resolve one agent. ``home`` defaults to ``BOT_BOTTLE_HOME`` or
    ``~/.bot-bottle``; ``repo`` to none (pass :func:`find_repo`'s answer)."""
    if home is None:
        from bot_bottle.paths import home_dir

        home = home_dir()
    return Manifest(home=home, repo=repo, host=host).agent(name)


def validate_file(
    path: Path, *, host: PluginHost, kind: Literal["bottle", "agent"] | None = None
) -> list[Problem]:
    """Every problem in one file on its own (no ``extends:`` or ``bottle:``
    lookup): what ``bot-bottle validate FILE`` reports. ``kind`` defaults
    to the parent directory's name (``bottles``/``agents``)."""
    kind = kind or ("bottle" if path.parent.name == "bottles" else "agent")
    problems: list[Problem] = []
    if not NAME_RE.match(path.stem):
        problems.append(
            Problem(
                path,
                1,
                f"file name {path.name!r} is not a valid {kind} name "
                "(lower-case letters, digits and '-', starting with a letter)",
            )
        )
    try:
        doc = read_document(path)
        if kind == "agent":
            parse_agent(doc)
        else:
            parse_bottle_checked(doc, host)
    except ManifestError as exc:
        problems.extend(exc.problems)
    return problems


__all__: Sequence[str] = (
    "AgentRef",
    "GitIdentity",
    "Manifest",
    "ResolvedAgent",
    "ResolvedBottle",
    "UnknownAgentError",
    "find_repo",
    "load_agent",
    "validate_file",
)
