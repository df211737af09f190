"""The git-gate daemon's configuration file (JSON), shared by planner and daemon.

It holds paths and public data only: the key *file path* inside the sidecar,
never key material, so the file can be logged, shown and mounted without
exposing a secret. The daemon validates it again on
load: it may be started by hand, and a config file is input like any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot_bottle.gitgate.spec import GitGateError, SshUrl, check_repo_name

CONFIG_VERSION = 1
DEFAULT_CONNECT_TIMEOUT = 10


class GateRepoConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    #: The real upstream, ``ssh://user@host[:port]/path``.
    upstream: str
    #: Pinned host key(s) for the upstream, in ``known_hosts`` format.
    known_hosts: str
    #: The repo's private key as mounted into the sidecar (may be read-only,
    #: owned by another uid): the daemon copies it to a 0600 file of its own.
    key_file: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_repo_name(value)
        except GitGateError as exc:
            raise ValueError(exc.message) from None

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        try:
            return SshUrl.parse(value).url
        except GitGateError as exc:
            raise ValueError(exc.message) from None

    @field_validator("known_hosts", "key_file")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in '\r\n\0"'):
            raise ValueError(f"{value!r} must be an absolute path on one line, without '\"'")
        return value

    @property
    def ssh(self) -> SshUrl:
        return SshUrl.parse(self.upstream)


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = CONFIG_VERSION
    repos: tuple[GateRepoConfig, ...] = ()
    #: DLP detectors (plugin registration names) a push is scanned with;
    #: ``None`` means every installed detector that scans outbound data.
    detectors: tuple[str, ...] | None = None
    #: Seconds ssh waits for the upstream before giving up (BatchMode never prompts).
    connect_timeout: int = Field(default=DEFAULT_CONNECT_TIMEOUT, ge=1, le=300)

    @field_validator("repos")
    @classmethod
    def _unique(cls, repos: tuple[GateRepoConfig, ...]) -> tuple[GateRepoConfig, ...]:
        names = [r.name for r in repos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"repo names appear twice: {', '.join(dupes)}")
        return repos

    def repo(self, name: str) -> GateRepoConfig:
        for repo in self.repos:
            if repo.name == name:
                return repo
        raise GitGateError(f"git-gate has no repo named {name!r}")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: Path) -> GateConfig:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise GitGateError(
                f"cannot read git-gate config {path}: {exc.strerror}",
                hint="pass the config file the launcher wrote with --config",
            ) from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                for err in exc.errors(include_url=False)
            )
            raise GitGateError(
                f"git-gate config {path} is invalid: {problems}",
                hint="regenerate it from the bottle's manifest",
            ) from None
