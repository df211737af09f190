"""pydantic models of the two file kinds: bottles and agents.

These models know nothing about plugins (importing them loads none): the
plugin-owned parts — an agent provider's options, a key provisioner's
options, DLP detector names — are kept as plain data here and checked
against the installed plugins by :mod:`bot_bottle.manifest.parse`.

Every model forbids unknown keys and says which known key was probably
meant; every model is strict, so YAML 1.2's ``yes``/``no`` (strings) are
not silently turned into booleans.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Annotated, Any, ClassVar, Literal, LiteralString, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bot_bottle.errors import BotBottleError
from bot_bottle.gitgate import spec as gate_spec
from bot_bottle.names import ENV_NAME_RE, HOSTNAME_RE, hostile_char

# -- names ------------------------------------------------------------------

#: A bottle or agent name is its file name without ``.md``.
#: Anchored with ``\Z``: ``$`` also matches before a final newline.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]*\Z")
SKILL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
HTTP_METHOD_RE = re.compile(r"^[A-Z]+\Z")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token


_hostile = hostile_char


def _err(kind: LiteralString, message: str, **ctx: Any) -> PydanticCustomError:
    # The message travels as a context value: text in the template itself
    # would be scanned for {placeholders}.
    return PydanticCustomError(kind, "{message}", {"message": message, **ctx})


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise _err(
            "name",
            f"{value!r} is not a valid bottle/agent name: use lower-case letters, digits "
            "and '-', starting with a letter",
        )
    return value


def _check_env_name(value: str) -> str:
    if not ENV_NAME_RE.match(value):
        raise _err(
            "env_name",
            f"{value!r} is not a valid environment variable name "
            "(letters, digits and '_', not starting with a digit)",
        )
    return value


def _check_skill(value: str) -> str:
    if not SKILL_NAME_RE.match(value) or value in (".", ".."):
        raise _err(
            "skill",
            f"{value!r} is not a skill name: a skill is a directory name under "
            "~/.claude/skills/ (letters, digits, '.', '_', '-'; no '/')",
        )
    return value


def _check_hostname(value: str) -> str:
    if HOSTNAME_RE.match(value):
        return value.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    what = _hostile(value)
    extra = f" (it contains {what})" if what else ""
    if "://" in value or "/" in value:
        extra = " (write the host name only, without scheme or path)"
    elif "*" in value:
        extra = " (wildcards are not supported: list each host exactly)"
    raise _err("hostname", f"{value!r} is not a host name{extra}")


def _check_path_value(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _err("host_path", "a path must not contain control characters (newline, tab, ...)")
    if value.startswith("~"):
        return value
    if not value.startswith("/"):
        raise _err(
            "host_path", f"{value!r} must be an absolute path or start with '~' (a host file)"
        )
    return value


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _err("ip", f"{value!r} is not an IP address") from None


Name = Annotated[str, AfterValidator(_check_name)]
EnvName = Annotated[str, AfterValidator(_check_env_name)]
SkillName = Annotated[str, AfterValidator(_check_skill)]
HostName = Annotated[str, AfterValidator(_check_hostname)]
HostPath = Annotated[str, AfterValidator(_check_path_value)]
IpAddress = Annotated[str, AfterValidator(_check_ip)]
ExtraHosts = dict[HostName, IpAddress]


# -- base ---------------------------------------------------------------------


class ManifestModel(BaseModel):
    """Base of every manifest section: strict, frozen, unknown keys refused.

    The unknown-key check wraps validation so the message can say which
    known key was probably meant (pydantic's own ``extra_forbidden`` cannot),
    while the known keys are still validated and their problems reported
    too; ``extra="forbid"`` stays on so the JSON Schema says
    ``additionalProperties: false`` for editors.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: Keys some users will try that belong elsewhere: key -> explanation.
    misplaced_keys: ClassVar[dict[str, str]] = {}

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """Reshape raw input before keys are checked (see :class:`KeySpec`)."""
        return data

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_unknown_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        data = cls._prepare(data)
        if not isinstance(data, dict):
            return handler(data)
        known = set(cls.model_fields)
        unknown = [k for k in data if k not in known]
        if not unknown:
            return handler(data)
        # Validate the known keys anyway, so one typo does not hide the
        # other problems of the same block; their errors ride along.
        nested: list[Any] = []
        try:
            handler({k: v for k, v in data.items() if k in known})
        except ValidationError as exc:
            nested = list(exc.errors(include_url=False, include_input=False))
        parts = []
        for key in unknown:
            if isinstance(key, str) and key in cls.misplaced_keys:
                parts.append(f"{key!r} {cls.misplaced_keys[key]}")
                continue
            close = (
                difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                if isinstance(key, str)
                else []
            )
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown key {key!r}{hint}")
        allowed = ", ".join(sorted(known))
        raise PydanticCustomError(
            "unknown_key",
            "{detail}; allowed keys here: {allowed}",
            {"detail": "; ".join(parts), "allowed": allowed, "key": unknown[0], "nested": nested},
        )


# -- env ----------------------------------------------------------------------

PROMPT = "?prompt"
_INTERP_RE = re.compile(r"\$(\$|\{([^}]*)\}|)")


def env_value_parts(value: str) -> list[tuple[Literal["text", "var"], str]]:
    """Split an env value into literal text and ``${HOST_VAR}`` references.

    ``$$`` is a literal ``$``; any other ``$`` must start ``${NAME}``.
    Raises ValueError with a message that does not repeat the value (it may
    be a secret).
    """
    parts: list[tuple[Literal["text", "var"], str]] = []
    pos = 0
    text = ""
    for m in _INTERP_RE.finditer(value):
        text += value[pos : m.start()]
        pos = m.end()
        if m.group(1) == "$":
            text += "$"
            continue
        name = m.group(2)
        if name is None:
            raise ValueError(
                "a '$' must start '${HOST_VAR}' (write '$$' for a literal dollar sign)"
            )
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"'${{{name}}}' does not name an environment variable")
        if text:
            parts.append(("text", text))
            text = ""
        parts.append(("var", name))
    text += value[pos:]
    if text:
        parts.append(("text", text))
    return parts


def _check_env_value(value: str) -> str:
    if value.strip().lower() == PROMPT:
        return value
    try:
        env_value_parts(value)
    except ValueError as exc:
        # The message never repeats the value: it may be a secret.
        raise _err("env_value", str(exc)) from None
    return value


#: literal, ``?prompt`` or text with ``${HOST_VAR}`` references
EnvValue = Annotated[str, AfterValidator(_check_env_value)]


# -- git ----------------------------------------------------------------------


class GitUser(ManifestModel):
    """``git config user.name`` / ``user.email`` inside the bottle."""

    name: str | None = None
    email: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (self.name or self.email):
            raise _err(
                "git_user_empty",
                "git_user sets neither 'name' nor 'email'; set one or remove the block",
            )
        for field in ("name", "email"):
            value = getattr(self, field)
            if value is not None and any(c in value for c in "\n\r\0"):
                raise _err("git_user_value", f"git_user.{field} must be a single line")
        return self


class SshUrl(ManifestModel):
    """``ssh://user@host[:port]/path``, parsed."""

    url: str
    user: str
    host: str
    port: int = 22
    path: str

    @classmethod
    def parse(cls, value: str) -> SshUrl:
        what = _hostile(value)
        if what:
            raise _err(
                "ssh_url",
                f"url contains {what}; a git-gate url must be ssh://user@host[:port]/path",
            )
        if "://" not in value and "@" in value and ":" in value:
            raise _err(
                "ssh_url",
                f"{value!r} is scp-style; write it as ssh://user@host/path "
                "(with :port after the host if not 22)",
            )
        # git-gate's parser is the authority on what the gate will accept, so
        # the manifest and the gate can never disagree about a url.
        try:
            parsed = gate_spec.SshUrl.parse(value)
        except gate_spec.GitGateError as exc:
            raise _err("ssh_url", _gate_message(exc)) from None
        return cls(
            url=value, user=parsed.user, host=parsed.host, port=parsed.port, path=parsed.path
        )


def _gate_message(exc: BotBottleError) -> str:
    message = exc.message.removeprefix("git-gate ")
    return f"{message}; {exc.hint}" if exc.hint else message


def _ssh_url(value: Any) -> Any:
    if isinstance(value, str):
        return SshUrl.parse(value)
    return value


def _host_key(value: str) -> str:
    try:
        return gate_spec.check_host_key(value)
    except gate_spec.GitGateError as exc:
        raise _err("host_key", _gate_message(exc)) from None


class KeySpec(ManifestModel):
    """A git-gate repo's SSH key: ``{provider: static, path}`` (core) or
    ``{provider: <key provisioner plugin>, ...its options}``.

    ``options`` holds every key but ``provider``; the provisioner's own
    model validates them (:mod:`bot_bottle.manifest.parse`).
    """

    provider: str
    options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            rest = {k: v for k, v in data.items() if k != "provider"}
            # A missing provider becomes None, which _provider_given explains.
            return {"provider": data.get("provider"), "options": rest}
        return data

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_given(cls, value: Any) -> Any:
        if value is None:
            raise _err(
                "key_provider",
                "key needs 'provider': 'static' with a 'path', or a key-provisioner plugin",
            )
        return value


class StaticKeyOptions(ManifestModel):
    """Options of core's ``static`` key: a private key file on the host.

    Not checked for existence here: the file is read at launch, and a key
    made just before it (by a script, a secrets manager) must not fail a
    manifest that is checked earlier.
    """

    path: HostPath


class RepoEntry(ManifestModel):
    """One ``git_gate.repos[]`` entry as written in one file.

    Only ``name`` is required here: with ``extends:``, a child may override
    one field of a parent's repo (``key`` only, say). The effective repo
    (:class:`GitRepo`) must have every field.
    """

    name: str
    url: (
        Annotated[
            SshUrl,
            BeforeValidator(_ssh_url),
            # Written as a string; parsed into its parts.
            WithJsonSchema(
                {"type": "string", "pattern": "^ssh://[^@/]+@[^/]+/.+$", "title": "Url"}
            ),
        ]
        | None
    ) = None
    host_key: Annotated[str, AfterValidator(_host_key)] | None = None
    key: KeySpec | None = None
    extra_hosts: ExtraHosts | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return gate_spec.check_repo_name(value)
        except gate_spec.GitGateError as exc:
            raise _err("repo_name", _gate_message(exc)) from None


class GitRepo(ManifestModel):
    """An effective git-gate repo (after ``extends:``): every field set."""

    name: str
    url: SshUrl
    host_key: str
    key: KeySpec
    extra_hosts: ExtraHosts = Field(default_factory=dict)


class GitGate(ManifestModel):
    repos: list[RepoEntry] = Field(default_factory=list)

    @field_validator("repos")
    @classmethod
    def _unique(cls, repos: list[RepoEntry]) -> list[RepoEntry]:
        seen: set[str] = set()
        for repo in repos:
            if repo.name in seen:
                raise _err("repo_duplicate", f"repo name {repo.name!r} appears twice")
            seen.add(repo.name)
        return repos


# -- egress ---------------------------------------------------------------------


def _compile_re2(pattern: str) -> str:
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr; the error is ours to report
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise _err(
            "regex",
            f"regex {pattern!r} is not valid RE2 syntax: {reason} "
            "(egress matches with RE2: no lookaround, no backreferences)",
        ) from None
    return pattern


class PathMatch(ManifestModel):
    type: Literal["prefix", "exact", "regex"] = "prefix"
    value: str

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type == "regex":
            _compile_re2(self.value)
        elif not self.value.startswith("/"):
            raise _err("path_match", f"a {self.type} path must start with '/'")
        return self


class HeaderMatch(ManifestModel):
    name: str
    value: str
    type: Literal["exact", "regex"] = "exact"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HEADER_NAME_RE.match(value):
            raise _err("header_name", f"{value!r} is not an HTTP header name")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.type == "regex":
            _compile_re2(self.value)
        return self


class Match(ManifestModel):
    """One match entry: every given part must match (AND); a route's
    ``matches`` list passes a request if any entry matches (OR)."""

    paths: list[PathMatch] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if not HTTP_METHOD_RE.match(method):
                raise _err(
                    "method", f"{method!r} is not an HTTP method (write it upper-case: GET, POST)"
                )
        return methods

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not (self.paths or self.methods or self.headers):
            raise _err(
                "match_empty",
                "an empty match allows every request; give paths, methods or headers, "
                "or drop 'matches' to allow the whole host",
            )
        return self


class Auth(ManifestModel):
    """Credential injection: egress strips the agent's ``Authorization`` and
    sends ``<scheme> <value of host env var token_ref>``."""

    scheme: Literal["Bearer", "token"]
    token_ref: EnvName


def _detectors(value: Any) -> Any:
    if value is False or value is None:
        return value
    if value is True:
        raise _err(
            "detectors",
            "write the detector names as a list, 'false' to turn scanning off, "
            "or leave the key out for every installed detector",
        )
    if isinstance(value, list):
        return value
    raise _err("detectors", "expected a list of detector names, or false to turn scanning off")


Detectors = Annotated[Literal[False] | list[str] | None, BeforeValidator(_detectors)]


class RouteDlp(ManifestModel):
    """Per-route DLP: leave a key out for every installed detector, ``false``
    for none, or a list of installed detector names."""

    outbound_detectors: Detectors = None
    inbound_detectors: Detectors = None


class RouteGit(ManifestModel):
    """``fetch: true`` lets git smart-HTTP clone/fetch (``git-upload-pack``)
    through this host; push (``git-receive-pack``) is always refused."""

    fetch: StrictBool = False


class Route(ManifestModel):
    """One allowed upstream host. See the package docstring for the field map."""

    host: HostName
    #: Ports the host may be reached on; empty means 443 and 80.
    ports: list[Annotated[StrictInt, Field(ge=1, le=65535)]] = Field(default_factory=list)
    auth: Auth | None = None
    matches: list[Match] = Field(default_factory=list)
    dlp: RouteDlp = Field(default_factory=RouteDlp)
    git: RouteGit = Field(default_factory=RouteGit)
    #: WebSocket upgrades are refused unless a route opts in.
    websocket: StrictBool = False


class Egress(ManifestModel):
    log: Literal["off", "blocks", "full"] = "blocks"
    routes: list[Route] = Field(default_factory=list)
    #: An extra CA bundle (PEM, host path) egress trusts for upstream TLS, on
    #: top of the system bundle: internal hosts with a private CA.
    upstream_ca: HostPath | None = None

    @field_validator("routes")
    @classmethod
    def _unique_hosts(cls, routes: list[Route]) -> list[Route]:
        seen: set[str] = set()
        for route in routes:
            if route.host in seen:
                raise _err(
                    "route_duplicate",
                    f"host {route.host!r} has two routes; put both matches in one route",
                )
            seen.add(route.host)
        return routes


# -- resources -----------------------------------------------------------------

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def memory_bytes(text: str) -> int:
    """``"512m"`` -> bytes (k, m, g are powers of 1024; a bare number is bytes)."""
    m = _SIZE_RE.match(text.strip().lower().removesuffix("b").removesuffix("i"))
    if m is None:
        raise ValueError(text)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def _check_memory(value: str) -> str:
    try:
        size = memory_bytes(value)
    except ValueError:
        raise _err("memory", f"{value!r} is not a memory size; write e.g. '512m' or '4g'") from None
    if size < 32 * 1024**2:
        raise _err("memory", f"{value!r} is below 32m: nothing would start")
    return value


MemorySize = Annotated[str, AfterValidator(_check_memory)]


class Limits(ManifestModel):
    """cgroup limits of one container. ``null`` lifts one (no limit)."""

    #: Hard memory limit (no swap on top): the kernel's OOM killer picks a
    #: process inside the container, never one outside it.
    memory: MemorySize | None = None
    #: Maximum number of processes and threads (a fork bomb stops here).
    pids: Annotated[StrictInt, Field(ge=16, le=1_000_000)] | None = None
    #: CPU time, in cores (1.5 = one and a half cores' worth).
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None

    def describe(self) -> str:
        return (
            f"memory {self.memory or 'unlimited'}, pids {self.pids or 'unlimited'}, "
            f"cpus {self.cpus if self.cpus is not None else 'unlimited'}"
        )


#: Defaults (README "Resource limits" says why these numbers).
DEFAULT_LIMITS: dict[str, dict[str, Any]] = {
    "agent": {"memory": "4g", "pids": 4096, "cpus": 2.0},
    "bundle": {"memory": "1g", "pids": 512, "cpus": 1.0},
    "relay": {"memory": "256m", "pids": 64, "cpus": 0.5},
}


class Resources(ManifestModel):
    """``resources:``: limits per container (agent, sidecar bundle, agent-side relay)."""

    agent: Limits = Field(default_factory=lambda: Limits(**DEFAULT_LIMITS["agent"]))
    bundle: Limits = Field(default_factory=lambda: Limits(**DEFAULT_LIMITS["bundle"]))
    relay: Limits = Field(default_factory=lambda: Limits(**DEFAULT_LIMITS["relay"]))

    def overlay(self, child: Resources) -> Resources:
        """``child`` laid over this: per container, the fields it declares win."""
        out: dict[str, Limits] = {}
        for name in ("agent", "bundle", "relay"):
            base: Limits = getattr(self, name)
            if name not in child.model_fields_set:
                out[name] = base
                continue
            top: Limits = getattr(child, name)
            values = base.model_dump()
            values.update({k: getattr(top, k) for k in top.model_fields_set})
            out[name] = Limits(**values)
        return Resources(**out)


# -- agent provider -------------------------------------------------------------


class AgentProviderSpec(ManifestModel):
    """``agent_provider:``: ``template`` names the provider plugin; every other
    key is that provider's option, validated by its ``options_model``."""

    template: str
    # repr=False: a provider option may be a credential.
    options: dict[str, Any] = Field(default_factory=dict, repr=False)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if isinstance(data, dict) and "options" not in data:
            if "template" not in data:
                raise _err(
                    "template",
                    "agent_provider needs 'template': the agent provider plugin to use "
                    "(see 'bot-bottle plugins list')",
                )
            return {
                "template": data["template"],
                "options": {k: v for k, v in data.items() if k != "template"},
            }
        return data


# -- files ----------------------------------------------------------------------


class BottleFile(ManifestModel):
    """The frontmatter of ``~/.bot-bottle/bottles/<name>.md``."""

    extends: Annotated[str, AfterValidator(_check_name)] | None = None
    agent_provider: AgentProviderSpec | None = None
    # repr=False: a literal env value may well be a credential.
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, repr=False)
    skills: list[SkillName] = Field(default_factory=list)
    git_user: GitUser | None = None
    git_gate: GitGate = Field(default_factory=GitGate)
    egress: Egress = Field(default_factory=Egress)
    supervise: StrictBool = True
    extra_hosts: ExtraHosts = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)


_BOTTLE_ONLY = (
    "is a bottle setting: agents cannot declare it (credentials, egress and remotes live "
    "only in bottles under ~/.bot-bottle/bottles/)"
)


class AgentFile(ManifestModel):
    """The frontmatter of an agent file; the Markdown body is its prompt.

    ``name``, ``description``, ``model``, ``color``, ``memory`` and ``tools``
    are Claude Code sub-agent fields: accepted and ignored, so one file can
    also live in ``~/.claude/agents/``.
    """

    misplaced_keys: ClassVar[dict[str, str]] = {
        key: _BOTTLE_ONLY
        for key in (
            "env",
            "egress",
            "git_gate",
            "agent_provider",
            "extra_hosts",
            "supervise",
            "extends",
            "resources",
        )
    }

    bottle: Annotated[str, AfterValidator(_check_name)]
    skills: list[SkillName] = Field(default_factory=list)
    git_user: GitUser | None = None
    # Claude Code sub-agent fields, ignored by bot-bottle.
    name: Any = None
    description: Any = None
    model: Any = None
    color: Any = None
    memory: Any = None
    tools: Any = None

    @model_validator(mode="before")
    @classmethod
    def _bottle_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "bottle" not in data:
            raise _err(
                "agent_bottle",
                "an agent needs 'bottle: <name>', the bottle from ~/.bot-bottle/bottles/ "
                "it runs in",
            )
        return data


# -- the effective bottle ---------------------------------------------------------


class Bottle(ManifestModel):
    """A bottle after ``extends:`` is resolved: what a launch uses.

    ``name`` is the bottle selected; ``chain`` lists it and its ancestors,
    child first.
    """

    name: str
    chain: list[str]
    agent_provider: AgentProviderSpec
    #: NAME -> value spec (literal, ``?prompt``, ``${HOST_VAR}``), unresolved:
    #: :func:`bot_bottle.manifest.resolve_env` turns it into Secrets.
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    skills: list[str] = Field(default_factory=list)
    git_user: GitUser | None = None
    repos: list[GitRepo] = Field(default_factory=list)
    egress: Egress = Field(default_factory=Egress)
    supervise: bool = True
    extra_hosts: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)

    def sidecar_extra_hosts(self) -> dict[str, str]:
        """Bottle ``extra_hosts`` plus every repo's (already checked to agree)."""
        merged = dict(self.extra_hosts)
        for repo in self.repos:
            merged.update(repo.extra_hosts)
        return merged
