"""Fixtures for the manifest tests: a home, a repo, and a plugin host with
fake plugins (an agent provider, a key provisioner, DLP detectors) that
contribute real pydantic option models."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from bot_bottle import Registration, hookimpl
from bot_bottle.manifest import Manifest
from bot_bottle.plugins import PluginHost

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBzcZ5e+jvaVFU4nDvLSCdBF4nJJmu9FAsVMJoN2rBhP"


class ClaudeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auth_token: str | None = None
    dockerfile: str | None = None


class FakeClaude:
    options_model = ClaudeOptions


class CodexOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    forward_host_credentials: bool = False


class FakeCodex:
    options_model = CodexOptions


class ShellOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shell: str = "/bin/bash"


class FakeShell:
    # The starter files' demo bottle uses the shell provider.
    options_model = ShellOptions


class GiteaKeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_url: str
    token_ref: str


class FakeGitea:
    options_model = GiteaKeyOptions


class FakeDetector:
    pass


class FakePlugins:
    @hookimpl
    def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
        return [
            Registration("claude", FakeClaude),
            Registration("codex", FakeCodex),
            Registration("shell", FakeShell),
        ]

    @hookimpl
    def bot_bottle_register_key_provisioners(self) -> list[Registration[object]]:
        return [Registration("gitea", FakeGitea)]

    @hookimpl
    def bot_bottle_register_dlp_detectors(self) -> list[Registration[object]]:
        return [
            Registration(name, FakeDetector)
            for name in ("token_patterns", "known_secrets", "prompt_injection")
        ]


@pytest.fixture
def host(bot_bottle_host: PluginHost) -> PluginHost:
    bot_bottle_host.register(FakePlugins(), "fakes")
    return bot_bottle_host


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home" / ".bot-bottle"
    (h / "bottles").mkdir(parents=True)
    (h / "agents").mkdir(parents=True)
    return h


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / ".git").mkdir(parents=True)
    (r / ".bot-bottle" / "agents").mkdir(parents=True)
    return r


Write = Callable[..., Path]


@pytest.fixture
def write() -> Write:
    """write(dir, "name", "yaml frontmatter", body="") -> path of dir/name.md"""

    def _write(directory: Path, name: str, frontmatter: str, body: str = "") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}.md"
        fm = textwrap.dedent(frontmatter).strip("\n")
        path.write_text(f"---\n{fm}\n---\n{body}", encoding="utf-8")
        return path

    return _write


@pytest.fixture
def manifest(home: Path, host: PluginHost) -> Manifest:
    return Manifest(home=home, host=host)


MINIMAL_BOTTLE = "agent_provider: {template: claude}"
