"""The rendered egress config: one schema shared by the host and the egress sidecar.

Unknown keys are rejected everywhere (``extra="forbid"``). Regular expressions
are compiled with RE2 (linear time, no backtracking) when the file is parsed,
so a pattern RE2 cannot run is a config error, and no request the agent crafts
can stall the proxy in a regex.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot_bottle.errors import BotBottleError
from bot_bottle.names import HOSTNAME_RE

#: The config's format version; a sidecar refuses a file it does not understand.
CONFIG_VERSION = 1
#: The reserved host the agent queries for the live route table.
DEFAULT_INTROSPECTION_HOST = "_egress.local"
#: Environment variable names the host may use for token slots.
TOKEN_SLOT_RE = re.compile(r"^EGRESS_TOKEN_[0-9]+$")
DEFAULT_PORTS: tuple[int, ...] = (443, 80)

# A DNS name: labels of letters, digits and hyphens (underscore tolerated for
# service names), not starting or ending with a hyphen.


class EgressConfigError(BotBottleError):
    """The egress config (or what it was rendered from) is invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalize_host(value: str) -> str:
    """Lower-case a route host and refuse anything but a DNS name."""
    host = value.strip().rstrip(".").lower()
    if not host:
        raise ValueError("host must not be empty")
    if is_ip_literal(host):
        raise ValueError(
            f"{value!r} is an IP address; routes name hosts (pin a private host's "
            "address with extra_hosts instead)"
        )
    if not HOSTNAME_RE.match(host):
        raise ValueError(f"{value!r} is not a valid host name")
    return host


def is_ip_literal(host: str) -> bool:
    """True for IPv4/IPv6 literals, bracketed or not, and for the integer and
    hex spellings of IPv4 that some resolvers accept (``2130706433``, ``0x7f.1``)."""
    h = host.strip("[]")
    try:
        ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return True
    # inet_aton accepts 1-4 dot-separated parts in decimal, octal or hex.
    parts = h.split(".")
    return 0 < len(parts) <= 4 and all(
        re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", p) is not None for p in parts
    )


def compile_re2(pattern: str) -> Any:
    """Compile ``pattern`` with RE2 or raise ValueError naming the problem."""
    try:
        return re2.compile(pattern)
    except Exception as exc:  # re2.error is not a ValueError subclass
        raise ValueError(f"regex {pattern!r} is not supported by RE2: {exc}") from exc


class PathMatch(_Model):
    """Gateway-API path match. ``prefix`` matches whole path segments
    (``/v1`` matches ``/v1`` and ``/v1/x``, not ``/v10``); ``regex`` must match
    the whole path (query excluded)."""

    type: Literal["prefix", "exact", "regex"] = "prefix"
    value: str

    @model_validator(mode="after")
    def _check(self) -> PathMatch:
        if self.type == "regex":
            compile_re2(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f"path {self.value!r} must start with '/'")
        return self

    @cached_property
    def regex(self) -> Any:
        return compile_re2(self.value)

    def matches(self, path: str) -> bool:
        if self.type == "exact":
            return path == self.value
        if self.type == "prefix":
            prefix = self.value.rstrip("/")
            return prefix == "" or path == prefix or path.startswith(prefix + "/")
        return self.regex.fullmatch(path) is not None


class HeaderMatch(_Model):
    """A header the request must carry. Names compare case-insensitively;
    ``regex`` must match the whole value. Every instance of a repeated header
    must match (an upstream may read any of them)."""

    name: str = Field(min_length=1)
    value: str
    type: Literal["exact", "regex"] = "exact"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", v):
            raise ValueError(f"{v!r} is not a valid header name")
        return v.lower()

    @model_validator(mode="after")
    def _check(self) -> HeaderMatch:
        if self.type == "regex":
            compile_re2(self.value)
        return self

    @cached_property
    def regex(self) -> Any:
        return compile_re2(self.value)

    def matches(self, values: list[str]) -> bool:
        if not values:
            return False
        if self.type == "exact":
            return all(v == self.value for v in values)
        return all(self.regex.fullmatch(v) is not None for v in values)


class Match(_Model):
    """One Gateway-API match entry: every listed condition must hold; an empty
    list means no condition of that kind."""

    paths: tuple[PathMatch, ...] = ()
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for m in v:
            if not re.fullmatch(r"[A-Za-z]+", m):
                raise ValueError(f"{m!r} is not an HTTP method")
            out.append(m.upper())
        return tuple(out)

    def matches(self, method: str, path: str, headers: dict[str, list[str]]) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        if self.paths and not any(p.matches(path) for p in self.paths):
            return False
        return all(h.matches(headers.get(h.name, [])) for h in self.headers)


class Auth(_Model):
    """Credential injection: the token is read from the daemon's environment
    variable ``token_slot`` (its name only is in the file)."""

    scheme: Literal["Bearer", "token"]
    token_slot: str

    @field_validator("token_slot")
    @classmethod
    def _slot(cls, v: str) -> str:
        if not TOKEN_SLOT_RE.fullmatch(v):
            raise ValueError(f"token_slot {v!r} must look like EGRESS_TOKEN_<n>")
        return v


class GitPolicy(_Model):
    #: Permit git smart-HTTP fetch/clone (``git-upload-pack``). Push
    #: (``git-receive-pack``) is refused on every route regardless.
    fetch: bool = False


DetectorSelection = Literal[False] | tuple[str, ...]


class DlpSelection(_Model):
    """Which DLP detectors (plugin names) scan this route. ``false`` is off."""

    outbound_detectors: DetectorSelection = False
    inbound_detectors: DetectorSelection = False


class Route(_Model):
    host: str
    #: Ports the route permits; empty means the defaults (443 and 80).
    ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    auth: Auth | None = None
    matches: tuple[Match, ...] = ()
    git: GitPolicy = GitPolicy()
    websocket: bool = False
    dlp: DlpSelection = DlpSelection()
    #: Who declared the route ("bottle" or "provider:<name>"), for introspection.
    source: str = "bottle"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return normalize_host(v)

    @property
    def allowed_ports(self) -> tuple[int, ...]:
        return self.ports or DEFAULT_PORTS

    def describe(self) -> dict[str, Any]:
        """The route as introspection shows it: rules, no token values."""
        return {
            "host": self.host,
            "ports": list(self.allowed_ports),
            "auth": None if self.auth is None else {"scheme": self.auth.scheme, "injected": True},
            "matches": [m.model_dump(mode="json") for m in self.matches],
            "git": self.git.model_dump(mode="json"),
            "websocket": self.websocket,
            "dlp": self.dlp.model_dump(mode="json"),
            "source": self.source,
        }


class EgressConfig(_Model):
    version: Literal[1] = CONFIG_VERSION
    routes: tuple[Route, ...] = ()
    log_level: Literal["off", "blocks", "full"] = "blocks"
    #: Extra CA bundle (PEM path inside the sidecar) trusted for upstream TLS,
    #: in addition to the system bundle (never instead of it).
    upstream_ca: str | None = None
    introspection_host: str = DEFAULT_INTROSPECTION_HOST
    #: Name -> address pins applied when connecting upstream (private hosts;
    #: tests pin ``*.test`` to 127.0.0.1). Not an allowlist: routes still decide.
    extra_hosts: dict[str, str] = Field(default_factory=dict)

    @field_validator("introspection_host")
    @classmethod
    def _introspection(cls, v: str) -> str:
        return normalize_host(v)

    @field_validator("extra_hosts")
    @classmethod
    def _extra_hosts(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, addr in v.items():
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError as exc:
                raise ValueError(f"extra_hosts[{name!r}]: {addr!r} is not an IP address") from exc
            out[normalize_host(name)] = str(ip)
        return out

    @model_validator(mode="after")
    def _unique(self) -> EgressConfig:
        seen: set[str] = set()
        for r in self.routes:
            if r.host in seen:
                raise ValueError(f"host {r.host!r} has more than one route")
            seen.add(r.host)
        if self.introspection_host in seen:
            raise ValueError(f"introspection host {self.introspection_host!r} is also a route")
        return self

    def route_for(self, host: str) -> Route | None:
        host = host.rstrip(".").lower()
        for r in self.routes:
            if r.host == host:
                return r
        return None

    def token_slots(self) -> list[str]:
        return sorted({r.auth.token_slot for r in self.routes if r.auth})

    def dump_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "egress config") -> EgressConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise EgressConfigError(
                f"{source} is invalid: {_describe(exc)}",
                hint="re-render the bottle's egress config from its manifest",
            ) from None

    @classmethod
    def load(cls, path: Path) -> EgressConfig:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise EgressConfigError(
                f"cannot read egress config {path}: {exc.strerror}",
                hint="check the path and its permissions",
            ) from None
        return cls.parse(text, source=str(path))

    def write(self, path: Path) -> None:
        """Write atomically (rename), so a reloading sidecar never reads half a file.
        Bind-mount the *directory*: a single-file mount pins the old inode."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.dump_json(), encoding="utf-8")
        tmp.replace(path)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)
