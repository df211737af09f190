"""git-gate repos and keys from real manifest files, through plan and key staging."""

from __future__ import annotations

import stat
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
from bot_bottle_sidecars.launch.keys import GateKeys
from pydantic import BaseModel, ConfigDict

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.keys import KeyProvisioner, KeyRequest, ProvisionedKey
from bot_bottle.gitgate.from_manifest import gate_repo_specs
from bot_bottle.gitgate.plan import GitGatePlan, plan_git_gate
from bot_bottle.gitgate.spec import GitGateError
from bot_bottle.manifest import Bottle, Manifest
from bot_bottle.manifest.errors import ManifestError
from bot_bottle.manifest.models import GitRepo, KeySpec, SshUrl
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBzcZ5e+jvaVFU4nDvLSCdBF4nJJmu9FAsVMJoN2rBhP"
PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


class _ProviderOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Provider:
    options_model = _ProviderOptions


class _ForgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    api_url: str
    read_only: bool = False


class _Forge(KeyProvisioner):
    """A key provisioner that keeps its keys in a class-level dict."""

    options_model: ClassVar[type[BaseModel]] = _ForgeOptions
    live: ClassVar[dict[str, KeyRequest]] = {}

    def create(self, request: KeyRequest) -> ProvisionedKey:
        key_id = f"key-{request.repo_name}"
        self.live[key_id] = request
        return ProvisionedKey("forge", key_id, "ssh-ed25519 AAAA", Secret(PRIVATE))

    def revoke(self, request: KeyRequest, key_id: str) -> None:
        del self.live[key_id]


class _Plugins:
    @hookimpl
    def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
        return [Registration("fake", _Provider)]

    @hookimpl
    def bot_bottle_register_key_provisioners(self) -> list[Registration[object]]:
        return [Registration("forge", _Forge)]


@pytest.fixture
def host(bot_bottle_host: PluginHost) -> PluginHost:
    bot_bottle_host.register(_Plugins(), "fakes")
    return bot_bottle_host


def _write(home: Path, name: str, frontmatter: str) -> None:
    path = home / "bottles" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{textwrap.dedent(frontmatter).strip()}\n---\n", encoding="utf-8")


def _bottle(home: Path, host: PluginHost) -> Bottle:
    return Manifest(home=home, host=host).bottle("dev").bottle


def _gate(bottle: Bottle, **kw: str) -> GitGatePlan:
    # What make_plan does: the manifest's repos, planned by git-gate.
    return plan_git_gate(gate_repo_specs(bottle), **kw)  # type: ignore[arg-type]


def _two_repos(home: Path) -> None:
    _write(
        home,
        "base",
        f"""
        agent_provider: {{template: fake}}
        git_gate:
          repos:
            - name: app
              url: ssh://git@forge.test/team/app.git
              host_key: {HOST_KEY}
              key: {{provider: static, path: ~/.ssh/app_key}}
            - name: lib.core
              url: ssh://deploy@forge.test:2222/team/lib.git
              host_key: {HOST_KEY}
              key: {{provider: static, path: /nowhere}}
        """,
    )
    # The child overrides one field of an inherited repo: its key.
    _write(
        home,
        "dev",
        """
        extends: base
        git_gate:
          repos:
            - name: lib.core
              key: {provider: forge, api_url: "https://forge.test/api"}
        """,
    )


def test_repos_map_onto_gate_specs_and_plan(
    bot_bottle_home: Path, host: PluginHost, tmp_path: Path
) -> None:
    _two_repos(bot_bottle_home)
    specs = gate_repo_specs(_bottle(bot_bottle_home, host))
    assert [s.name for s in specs] == ["app", "lib.core"]
    app, lib = specs
    assert app.url == "ssh://git@forge.test/team/app.git"
    assert app.key.is_static and app.key.options["path"] == "~/.ssh/app_key"
    assert lib.url == "ssh://deploy@forge.test:2222/team/lib.git"
    assert lib.host_key == HOST_KEY
    assert lib.key.provider == "forge"
    assert dict(lib.key.options) == {"api_url": "https://forge.test/api"}

    plan = _gate(_bottle(bot_bottle_home, host), sidecar_root="/gate")
    assert plan.enabled
    assert plan.known_hosts["lib.core"] == f"[forge.test]:2222 {HOST_KEY}\n"
    assert ("git://git-gate:9418/app.git", "git@forge.test:team/app.git") in plan.insteadof()
    assert [k.sidecar_path for k in plan.keys] == ["/gate/keys/app", "/gate/keys/lib.core"]
    assert plan.config.detectors is None


def test_keys_stage_through_the_seam(
    bot_bottle_home: Path, host: PluginHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _two_repos(bot_bottle_home)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "app_key").write_text(PRIVATE)
    plan = _gate(_bottle(bot_bottle_home, host))
    keys = GateKeys(plan, tmp_path / "staged", bottle_slug="dev-1", host=host)
    with keys as paths:
        assert sorted(paths) == ["app", "lib.core"]
        assert paths["app"].read_text() == PRIVATE
        assert stat.S_IMODE(paths["lib.core"].stat().st_mode) == 0o600
        request = _Forge.live["key-lib.core"]
        assert request.host == "forge.test" and request.path == "/team/lib.git"
        assert isinstance(request.options, _ForgeOptions)
        assert request.options.api_url == "https://forge.test/api"
    assert _Forge.live == {}  # revoked at teardown
    assert not (tmp_path / "staged" / "app").exists()


def test_bottle_without_repos_plans_no_gate(bot_bottle_home: Path, host: PluginHost) -> None:
    _write(bot_bottle_home, "dev", "agent_provider: {template: fake}")
    plan = _gate(_bottle(bot_bottle_home, host))
    assert not plan.enabled and plan.files() == {"config.json": plan.config.to_json()}


def test_manifest_refuses_at_load_what_the_gate_would_refuse(
    bot_bottle_home: Path, host: PluginHost
) -> None:
    # The manifest validates urls with the gate's own parser, so a url the
    # gate would refuse at launch (a user starting with '.') is a load-time
    # manifest error naming file and line, not a surprise at launch.
    _write(
        bot_bottle_home,
        "dev",
        f"""
        agent_provider: {{template: fake}}
        git_gate:
          repos:
            - name: app
              url: ssh://.git@forge.test/app.git
              host_key: {HOST_KEY}
              key: {{provider: static, path: /k}}
        """,
    )
    with pytest.raises(ManifestError) as info:
        _bottle(bot_bottle_home, host)
    assert "dev.md:" in str(info.value) and "git_gate.repos[0].url" in str(info.value)
    assert "user '.git' is not valid" in str(info.value)


def test_static_key_without_path_is_refused() -> None:
    repo = GitRepo.model_construct(
        name="app",
        url=SshUrl.parse("ssh://git@forge.test/app.git"),
        host_key=HOST_KEY,
        key=KeySpec.model_construct(provider="static", options={}),
        extra_hosts={},
    )
    with pytest.raises(GitGateError, match="needs 'path'"):
        gate_repo_specs(Bottle.model_construct(name="dev", repos=[repo]))
