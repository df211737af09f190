"""What git-gate is told about each repo, validated strictly.

:class:`GateRepoSpec` is the gate's own view of a ``git_gate.repos[]`` entry.
The manifest's effective repo maps onto it one to one::

    GateRepoSpec(name=r.name, url=r.url.url, host_key=r.host_key,
                 key=GateKey(r.key.provider, r.key.options))
 Names and URLs end up in paths, git
config, argv and generated shell scripts, so they are checked here with
allow-lists; quoting in the generated scripts is only the backstop (a
manifest value that reached a script unchecked would be a command there).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bot_bottle.errors import BotBottleError
from bot_bottle.names import HOSTNAME_RE, hostile_char

#: A repo name becomes a directory (``<name>.git``), a URL path and a hook argument.
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~+/-]+$")
_SSH_URL_RE = re.compile(
    r"^ssh://(?P<user>[^@/]+)@(?P<host>\[[^\]/]+\]|[^:/]+)(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)$",
    re.DOTALL,
)
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
_HOST_KEY_RE = re.compile(r"^(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})$")
STATIC_PROVIDER = "static"


class GitGateError(BotBottleError):
    """A git-gate repo, key or configuration is unusable."""


_hostile = hostile_char


def _because(value: str) -> str:
    what = _hostile(value)
    return f" (it contains {what})" if what else ""


def check_repo_name(name: str) -> str:
    """Return ``name`` if it is a valid git-gate repo name, else raise."""
    if not isinstance(name, str) or not REPO_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise GitGateError(
            f"git-gate repo name {name!r} is not valid{_because(str(name))}",
            hint="use only letters, digits, '.', '_' and '-' (not '.' or '..')",
        )
    return name


@dataclass(frozen=True)
class SshUrl:
    """``ssh://user@host[:port]/path``, parsed."""

    user: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == 22 else f":{self.port}"
        return f"ssh://{self.user}@{host}{port}{self.path}"

    @property
    def known_hosts_name(self) -> str:
        """The host as ssh writes it in ``known_hosts`` (bracketed with a port)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @classmethod
    def parse(cls, value: str) -> SshUrl:
        hint = "write it as ssh://user@host[:port]/path"
        if not isinstance(value, str):
            raise GitGateError(f"git-gate url must be a string, not {type(value).__name__}")
        what = _hostile(value)
        if what:
            raise GitGateError(f"git-gate url {value!r} contains {what}", hint=hint)
        m = _SSH_URL_RE.match(value)
        if not m:
            raise GitGateError(
                f"git-gate url {value!r} is not an ssh://user@host[:port]/path url",
                hint=hint + " (only ssh:// is supported; user, host and path are required)",
            )
        user, host, path = m.group("user"), m.group("host"), m.group("path")
        # A user or host starting with '-' would be read by ssh as an option
        # (CVE-2017-1000117), hence the leading-character rules.
        for part, what in ((user, "user"), (host, "host")):
            if part.startswith("-"):
                raise GitGateError(
                    f"git-gate url {value!r}: {what} {part!r} must not start with '-' "
                    "(ssh would read it as an option)",
                    hint=hint,
                )
        if not _USER_RE.fullmatch(user):
            raise GitGateError(f"git-gate url {value!r}: user {user!r} is not valid", hint=hint)
        host = _check_host(host, value, hint)
        port = int(m.group("port") or 22)
        if not 0 < port < 65536:
            raise GitGateError(f"git-gate url {value!r}: port {port} is out of range", hint=hint)
        if not _PATH_RE.fullmatch(path) or any(seg in (".", "..") for seg in path.split("/")):
            raise GitGateError(
                f"git-gate url {value!r}: path {path!r} is not valid",
                hint="the path may hold letters, digits and . _ ~ + / - with no '.' or '..' "
                "segments",
            )
        return cls(user=user, host=host, port=port, path=path)


def check_host(host: str) -> str:
    """Return ``host`` (a DNS name or an IP address) normalised, else raise."""
    if not isinstance(host, str) or ":" in host:
        host = f"[{host}]" if isinstance(host, str) and not host.startswith("[") else str(host)
    return _check_host(host, host, "use a host name or an IP address")


def _check_host(host: str, value: str, hint: str) -> str:
    if host.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise GitGateError(
                f"git-gate url {value!r}: {host!r} is not an IPv6 address", hint=hint
            ) from None
    if HOSTNAME_RE.match(host):
        return host.lower()
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        raise GitGateError(
            f"git-gate url {value!r}: host {host!r} is not valid", hint=hint
        ) from None


def check_host_key(value: str) -> str:
    """Return the normalised ``TYPE BASE64`` of a pinned SSH host key, else raise.

    A trailing comment (as in a ``.pub`` file) is dropped; anything else,
    notably a second line, is refused: the value goes into ``known_hosts``.
    """
    hint = (
        "give one public key line 'TYPE BASE64' (e.g. 'ssh-ed25519 AAAA...'), as printed "
        "by 'ssh-keyscan -t ed25519 HOST' without the host name"
    )
    if not isinstance(value, str) or any(c in value.strip() for c in "\r\n\0"):
        raise GitGateError("git-gate host_key must be a single line", hint=hint)
    parts = value.strip().split(" ")
    if len(parts) == 3 and parts[2] and _hostile(parts[2]) is None:
        parts = parts[:2]
    m = _HOST_KEY_RE.match(" ".join(parts))
    if not m or m.group("type") not in HOST_KEY_TYPES:
        raise GitGateError(f"git-gate host_key {value[:40]!r} is not a public key", hint=hint)
    try:
        blob = base64.b64decode(m.group("blob"), validate=True)
    except (binascii.Error, ValueError):
        raise GitGateError("git-gate host_key is not valid base64", hint=hint) from None
    # The blob starts with its own key type: a mismatch means a paste error.
    kind = m.group("type").encode()
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4 : 4 + len(kind)] != kind:
        raise GitGateError(
            f"git-gate host_key: the key data is not a {m.group('type')} key", hint=hint
        )
    return f"{m.group('type')} {m.group('blob')}"


@dataclass(frozen=True)
class GateKey:
    """A repo's SSH key: ``static`` (a private key file on the host) or the name
    of a key-provisioner plugin with that plugin's options."""

    provider: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def static(cls, path: str | Path) -> GateKey:
        return cls(STATIC_PROVIDER, MappingProxyType({"path": str(path)}))

    @property
    def is_static(self) -> bool:
        return self.provider == STATIC_PROVIDER

    @property
    def static_path(self) -> Path:
        raw = self.options.get("path")
        if not isinstance(raw, str | Path) or not str(raw):
            raise GitGateError(
                "a static git-gate key needs 'path' (the private key file on the host)",
                hint="key: {provider: static, path: ~/.ssh/my_deploy_key}",
            )
        return Path(raw).expanduser()


@dataclass(frozen=True)
class GateRepoSpec:
    """One git-gate repo. Construction validates every field."""

    name: str
    url: str
    host_key: str
    key: GateKey

    def __post_init__(self) -> None:
        check_repo_name(self.name)
        SshUrl.parse(self.url)  # kept as written: the agent's remotes use that spelling
        object.__setattr__(self, "host_key", check_host_key(self.host_key))
        if not isinstance(self.key, GateKey) or not self.key.provider:
            raise GitGateError(f"git-gate repo {self.name!r} has no key provider")
        if self.key.is_static:
            self.key.static_path  # noqa: B018 - raises when 'path' is missing

    @property
    def ssh(self) -> SshUrl:
        return SshUrl.parse(self.url)


def check_unique(specs: list[GateRepoSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise GitGateError(
                f"git-gate repo name {spec.name!r} appears twice",
                hint="give each repo its own name",
            )
        seen.add(spec.name)
