"""The git-gate plan: pure data computed from the repo specs, no side effects.

From the declared repos it derives

* the daemon's config file (:class:`~bot_bottle.gitgate.config.GateConfig`,
  paths and public data only),
* one pinned ``known_hosts`` file per repo (never trust-on-first-use: a
  forged host on the first connection would get the deploy key's pushes),
* the agent's git config: ``url.<gate>.insteadOf <upstream>`` for each repo.
  ``insteadOf`` (not ``pushInsteadOf``) so that clone, fetch, pull and
  ls-remote go through the gate too, not only push,
* where each repo's key must appear inside the sidecar (:class:`KeyPlan`);
  the key itself is staged at launch by :mod:`bot_bottle_sidecars.launch.keys`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from types import MappingProxyType

from bot_bottle.gitgate.config import DEFAULT_CONNECT_TIMEOUT, GateConfig, GateRepoConfig
from bot_bottle.gitgate.spec import (
    GateKey,
    GateRepoSpec,
    GitGateError,
    check_host,
    check_unique,
)

DEFAULT_GATE_HOST = "git-gate"
DEFAULT_GATE_PORT = 9418
#: Where the launcher puts the gate's files inside the sidecar.
DEFAULT_SIDECAR_ROOT = PurePosixPath("/etc/bot-bottle/git-gate")
CONFIG_FILE = "config.json"
KNOWN_HOSTS_DIR = "known_hosts"
#: The staged keys directory is mounted read-only here, one file per repo name.
KEYS_DIR = "keys"
#: Environment slots of the bottle's secret values the pre-receive scan looks
#: for (known_secrets), in git-gate's environment only.
KNOWN_SECRET_PREFIX = "GITGATE_SECRET_"  # noqa: S105 - a variable name prefix, not a secret


@dataclass(frozen=True)
class KeyPlan:
    """One repo's key: where it comes from and where the sidecar reads it."""

    repo: str
    key: GateKey
    #: The key file's path inside the sidecar (``<root>/keys/<repo>``).
    sidecar_path: str

    @property
    def file_name(self) -> str:
        """The file name in the staged keys directory."""
        return self.repo


@dataclass(frozen=True)
class GitGatePlan:
    repos: tuple[GateRepoSpec, ...]
    gate_host: str
    gate_port: int
    sidecar_root: PurePosixPath
    config: GateConfig
    keys: tuple[KeyPlan, ...]
    #: repo name -> ``known_hosts`` content pinning its upstream's host key.
    known_hosts: Mapping[str, str]

    @property
    def enabled(self) -> bool:
        return bool(self.repos)

    def gate_url(self, name: str) -> str:
        return f"git://{self.gate_host}:{self.gate_port}/{name}.git"

    def insteadof(self) -> list[tuple[str, str]]:
        """``(gate URL, upstream URL)`` pairs: the URL as written, its
        normalised spelling if different, and its scp-style spelling
        (``user@host:path``) when it uses port 22, since that is how forges
        print clone URLs."""
        pairs: list[tuple[str, str]] = []
        for repo in self.repos:
            gate = self.gate_url(repo.name)
            pairs.append((gate, repo.url))
            ssh = repo.ssh
            if ssh.url != repo.url:
                pairs.append((gate, ssh.url))
            if ssh.port == 22 and ":" not in ssh.host:
                pairs.append((gate, f"{ssh.user}@{ssh.host}:{ssh.path.lstrip('/')}"))
        return pairs

    def git_config_entries(self) -> list[tuple[str, str]]:
        """``(key, value)`` for ``git config --global --add key value``."""
        return [(f"url.{gate}.insteadOf", upstream) for gate, upstream in self.insteadof()]

    def git_config_argv(self, scope: str = "--global") -> list[list[str]]:
        """argv lists that write :meth:`git_config_entries` (no shell involved)."""
        return [["git", "config", scope, "--add", k, v] for k, v in self.git_config_entries()]

    def render_gitconfig(self) -> str:
        """The same entries as a ``.gitconfig`` fragment (every value quoted)."""
        lines: list[str] = []
        for gate, upstream in self.insteadof():
            lines.append(f"[url {_git_quote(gate)}]")
            lines.append(f"\tinsteadOf = {_git_quote(upstream)}")
        return "\n".join(lines) + ("\n" if lines else "")

    def files(self) -> dict[str, str]:
        """Files for the sidecar, relative to :attr:`sidecar_root`: the config
        and the pinned ``known_hosts`` files. Keys are staged separately."""
        out = {CONFIG_FILE: self.config.to_json()}
        for name, text in self.known_hosts.items():
            out[f"{KNOWN_HOSTS_DIR}/{name}"] = text
        return out

    @property
    def config_path(self) -> str:
        return str(self.sidecar_root / CONFIG_FILE)


def _git_quote(value: str) -> str:
    # git config's quoting: a double-quoted string with \ and " escaped.
    # Validated values never need it; it is the backstop.
    if any(c in value for c in "\n\r\0"):
        raise GitGateError(f"value {value!r} cannot be written to a git config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plan_git_gate(
    repos: Sequence[GateRepoSpec],
    *,
    gate_host: str = DEFAULT_GATE_HOST,
    gate_port: int = DEFAULT_GATE_PORT,
    sidecar_root: PurePath | str = DEFAULT_SIDECAR_ROOT,
    detectors: Sequence[str] | None = None,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
) -> GitGatePlan:
    """Compute the git-gate plan. Pure: reads no files, contacts nothing.

    Key files are *not* checked here: provisioned keys exist only at launch,
    and a static key may be made just before it (by a script or a secrets
    manager), so a check at plan time would refuse a launch that works.
    """
    specs = tuple(repos)
    for spec in specs:
        if not isinstance(spec, GateRepoSpec):
            raise GitGateError(f"expected GateRepoSpec, got {type(spec).__name__}")
    check_unique(list(specs))
    root = PurePosixPath(str(sidecar_root))
    if not root.is_absolute():
        raise GitGateError(f"git-gate sidecar root {root} must be an absolute path")
    gate_host = check_host(gate_host)
    if ":" in gate_host:
        gate_host = f"[{gate_host}]"
    if not 0 < gate_port < 65536:
        raise GitGateError(f"git-gate port {gate_port} is out of range")
    known_hosts: dict[str, str] = {}
    keys: list[KeyPlan] = []
    repo_configs: list[GateRepoConfig] = []
    for spec in specs:
        ssh = spec.ssh
        known_hosts[spec.name] = f"{ssh.known_hosts_name} {spec.host_key}\n"
        key_path = str(root / KEYS_DIR / spec.name)
        keys.append(KeyPlan(repo=spec.name, key=spec.key, sidecar_path=key_path))
        repo_configs.append(
            GateRepoConfig(
                name=spec.name,
                upstream=spec.url,
                known_hosts=str(root / KNOWN_HOSTS_DIR / spec.name),
                key_file=key_path,
            )
        )
    config = GateConfig(
        repos=tuple(repo_configs),
        detectors=tuple(detectors) if detectors is not None else None,
        connect_timeout=connect_timeout,
    )
    return GitGatePlan(
        repos=specs,
        gate_host=gate_host,
        gate_port=gate_port,
        sidecar_root=root,
        config=config,
        keys=tuple(keys),
        known_hosts=MappingProxyType(known_hosts),
    )
