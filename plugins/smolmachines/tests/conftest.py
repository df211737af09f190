"""The smolvm contract fake as a fixture, and a minimal plan for the backend."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot_bottle.contracts.provider import ProviderPlan
from bot_bottle.manifest.models import Resources
from bot_bottle.secrets import Secret
from tests.conftest import base_image, docker_client  # noqa: F401

FAKE = Path(__file__).with_name("fake_smolvm.py")


@dataclass
class FakeSmolvm:
    binary: Path
    state: Path

    def calls(self) -> list[list[str]]:
        """Every argv the fake got, without the global flags the client adds."""
        out = []
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        for line in log.read_text().splitlines():
            argv = json.loads(line)
            i = argv.index("--error-format") if "--error-format" in argv else None
            if i is not None:
                argv = argv[:i] + argv[i + 2 :]
            out.append(argv)
        return out

    def verbs(self) -> list[str]:
        """``machine exec``-style verbs, exec with its command's first word."""
        out = []
        for argv in self.calls():
            verb = " ".join(argv[:2])
            if verb == "machine exec":
                verb += " " + argv[argv.index("--") + 1]
            out.append(verb)
        return out

    def machines(self) -> dict[str, Any]:
        path = self.state / "machines.json"
        return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def mini_plan() -> type[MiniPlan]:
    """The plan class (test modules cannot import conftest: no package here)."""
    return MiniPlan


@pytest.fixture
def fake_script() -> Path:
    return FAKE


@pytest.fixture
def fake_smolvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSmolvm]:
    binary = tmp_path / "bin" / "smolvm"
    binary.parent.mkdir()
    binary.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} "$@"\n')
    binary.chmod(0o755)
    state = tmp_path / "fake-state"
    monkeypatch.setenv("BOT_BOTTLE_SMOLVM", str(binary))
    monkeypatch.setenv("FAKE_SMOLVM_DIR", str(state))
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(tmp_path / "home"))
    for name in ("FAKE_SMOLVM_FAIL", "FAKE_SMOLVM_LS", "FAKE_SMOLVM_DIE_AFTER"):
        monkeypatch.delenv(name, raising=False)
    yield FakeSmolvm(binary, state)


@dataclass(frozen=True)
class MiniPlan:
    """A plan with exactly the fields of the backend contract's protocol."""

    slug: str = "shell-0a1b2c"
    agent: str = "shell"
    label: str | None = None
    cwd: Path | None = None
    bottle: str = "demo"
    provider_plan: ProviderPlan = field(default_factory=lambda: ProviderPlan(env={}))
    agent_image_spec: Any = None
    agent_image: str | None = "bot-bottle/base:trixie"
    bundle_image: str | None = None
    #: Empty: this backend's ``agent_endpoint_host`` (the slug's alias), as
    #: core's make_plan fills it in.
    agent_host: str = ""
    #: Empty: core's proxy variables for ``agent_host``, plus one variable.
    agent_env: Mapping[str, Secret] = field(default_factory=dict)
    egress_config: Any = None
    gitgate: Any = None
    gitgate_secrets: Mapping[str, Secret] = field(default_factory=dict)
    supervise: bool = False
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    upstream_ca: Path | None = None
    resources: Resources = field(default_factory=Resources)
    backend_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from bot_bottle.plan import PROXY_PORT, endpoint_url, proxy_env
        from bot_bottle_smolmachines.backend import SmolmachinesBackend

        if not self.agent_host:
            host = SmolmachinesBackend().agent_endpoint_host(self.slug)
            object.__setattr__(self, "agent_host", host)
        if not self.agent_env:
            env = proxy_env(endpoint_url(self.agent_host, PROXY_PORT), self.agent_host)
            env["TOKEN"] = "placeholder"
            object.__setattr__(self, "agent_env", {k: Secret(v) for k, v in env.items()})

    def bundle_env(self) -> Mapping[str, Secret]:
        return {}
