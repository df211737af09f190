"""Launch-time keys for git-gate: static files copied 0600, provisioned keys revoked loudly."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import ClassVar

import pytest
from bot_bottle_sidecars.launch.keys import GateKeys
from pydantic import BaseModel

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.keys import KeyProvisioner, KeyRequest, ProvisionedKey
from bot_bottle.errors import KeyRevocationError
from bot_bottle.gitgate.ledger import KeyLedger, KeyRecord, revoke_recorded
from bot_bottle.gitgate.plan import GitGatePlan, plan_git_gate
from bot_bottle.gitgate.spec import GateKey, GateRepoSpec, GitGateError
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGt0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0a2t0"
PRIVATE = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def _spec(name: str, key: GateKey) -> GateRepoSpec:
    return GateRepoSpec(name, f"ssh://git@forge.test/team/{name}.git", HOST_KEY, key)


class _Options(BaseModel):
    team: str


class _Forge:
    """A stand-in forge: records the keys a provisioner created and revoked."""

    def __init__(self, fail_revoke: set[str] | None = None) -> None:
        self.live: dict[str, str] = {}
        self.fail_revoke = fail_revoke or set()
        self.requests: list[KeyRequest] = []
        #: What the state dir recorded while each create was running.
        self.seen_in_ledger: list[list[str | None]] = []
        self.ledger: KeyLedger | None = None


def _ledger(tmp_path: Path) -> KeyLedger:
    return KeyLedger(tmp_path / "state" / "b1")


def _gate(plan: GitGatePlan, tmp_path: Path, host: PluginHost) -> GateKeys:
    return GateKeys(plan, tmp_path / "s", bottle_slug="b1", ledger=_ledger(tmp_path), host=host)


def _provisioner(forge: _Forge) -> type[KeyProvisioner]:
    class Provisioner(KeyProvisioner):
        name = "testforge"
        options_model: ClassVar[type[BaseModel]] = _Options

        def create(self, request: KeyRequest) -> ProvisionedKey:
            forge.requests.append(request)
            key_id = f"id-{request.repo_name}"
            if forge.ledger is not None:
                forge.seen_in_ledger.append([e.record.key_id for e in forge.ledger.entries()])
            forge.live[key_id] = request.repo_name
            request.on_created(key_id)
            if forge.ledger is not None:
                forge.seen_in_ledger.append([e.record.key_id for e in forge.ledger.entries()])
            return ProvisionedKey("testforge", key_id, "ssh-ed25519 AAAA", Secret(PRIVATE))

        def find_keys(self, request: KeyRequest) -> list[str]:
            return [k for k, repo in forge.live.items() if repo == request.repo_name]

        def revoke(self, request: KeyRequest, key_id: str) -> None:
            if key_id in forge.fail_revoke:
                raise KeyRevocationError(f"forge said 500 for {key_id}")
            del forge.live[key_id]

    return Provisioner


def _host(bot_bottle_host: PluginHost, forge: _Forge) -> PluginHost:
    cls = _provisioner(forge)

    class Plugin:
        @hookimpl
        def bot_bottle_register_key_provisioners(self) -> list[Registration[KeyProvisioner]]:
            return [Registration("testforge", cls, "test forge")]

    bot_bottle_host.register(Plugin(), "testforge-plugin")
    return bot_bottle_host


def test_static_key_is_copied_with_mode_0600_and_removed_at_close(tmp_path: Path) -> None:
    src = tmp_path / "deploy_key"
    src.write_text(PRIVATE)
    src.chmod(0o644)
    plan = plan_git_gate([_spec("app", GateKey.static(src))])
    keys = GateKeys(plan, tmp_path / "staged", bottle_slug="b1")
    paths = keys.stage()
    assert paths["app"].read_text() == PRIVATE
    assert stat.S_IMODE(paths["app"].stat().st_mode) == 0o600
    keys.close()
    assert not paths["app"].exists()


def test_missing_static_key_is_a_clear_error_at_launch(tmp_path: Path) -> None:
    plan = plan_git_gate([_spec("app", GateKey.static(tmp_path / "nope"))])
    with pytest.raises(GitGateError, match="does not exist") as err:
        GateKeys(plan, tmp_path / "staged", bottle_slug="b1").stage()
    assert err.value.hint


def test_public_key_given_as_static_key_is_refused(tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text(HOST_KEY)
    plan = plan_git_gate([_spec("app", GateKey.static(pub))])
    with pytest.raises(GitGateError, match="not a private key"):
        GateKeys(plan, tmp_path / "staged", bottle_slug="b1").stage()


def test_provisioned_key_is_created_at_stage_and_revoked_at_close(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    forge = _Forge()
    plan = plan_git_gate([_spec("app", GateKey("testforge", {"team": "t"}))])
    with _gate(plan, tmp_path, _host(bot_bottle_host, forge)) as p:
        assert forge.live == {"id-app": "app"}
        assert p["app"].read_text() == PRIVATE
        assert stat.S_IMODE(p["app"].stat().st_mode) == 0o600
        req = forge.requests[0]
        assert (req.bottle_slug, req.host, req.path) == ("b1", "forge.test", "/team/app.git")
    assert forge.live == {}
    assert not (tmp_path / "s" / "app").exists()


def test_failed_revocation_is_loud_and_every_key_is_still_tried(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    forge = _Forge(fail_revoke={"id-a"})
    plan = plan_git_gate(
        [
            _spec("a", GateKey("testforge", {"team": "t"})),
            _spec("b", GateKey("testforge", {"team": "t"})),
        ]
    )
    keys = _gate(plan, tmp_path, _host(bot_bottle_host, forge))
    keys.stage()
    with pytest.raises(KeyRevocationError, match="id-a") as err:
        keys.close()
    assert forge.live == {"id-a": "a"}  # b was revoked although a failed first
    assert err.value.hint and "by hand" in err.value.hint and "cleanup" in err.value.hint
    assert PRIVATE not in str(err.value)


def test_stage_failure_revokes_keys_already_created(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    forge = _Forge()
    plan = plan_git_gate(
        [
            _spec("a", GateKey("testforge", {"team": "t"})),
            _spec("b", GateKey.static(tmp_path / "missing")),
        ]
    )
    with pytest.raises(GitGateError):
        _gate(plan, tmp_path, _host(bot_bottle_host, forge)).stage()
    assert forge.live == {}


def test_invalid_provisioner_options_are_a_clear_error(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    plan = plan_git_gate([_spec("app", GateKey("testforge", {"tema": "t"}))])
    with pytest.raises(GitGateError, match="options for 'testforge' are invalid"):
        _gate(plan, tmp_path, _host(bot_bottle_host, _Forge())).stage()


def test_unknown_provisioner_names_what_is_installed(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    plan = plan_git_gate([_spec("app", GateKey("gitea", {}))])
    with pytest.raises(Exception, match="no key provisioner named 'gitea'"):
        _gate(plan, tmp_path, _host(bot_bottle_host, _Forge())).stage()


def test_each_key_is_recorded_before_the_forge_is_asked_and_its_id_before_create_returns(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    forge = _Forge()
    forge.ledger = _ledger(tmp_path)
    plan = plan_git_gate([_spec("app", GateKey("testforge", {"team": "t"}))])
    with _gate(plan, tmp_path, _host(bot_bottle_host, forge)):
        assert forge.seen_in_ledger == [[None], ["id-app"]]
        (entry,) = forge.ledger.entries()
        rec = entry.record
        assert (rec.provisioner, rec.bottle_slug, rec.repo_name) == ("testforge", "b1", "app")
        assert dict(rec.options) == {"team": "t"}
        assert PRIVATE not in entry.path.read_text()
    assert forge.ledger.entries() == []


def test_a_failed_revocation_stays_recorded_and_revoke_recorded_retries_it(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    forge = _Forge(fail_revoke={"id-app"})
    ledger = _ledger(tmp_path)
    host = _host(bot_bottle_host, forge)
    plan = plan_git_gate([_spec("app", GateKey("testforge", {"team": "t"}))])
    keys = GateKeys(plan, tmp_path / "s", bottle_slug="b1", ledger=ledger, host=host)
    keys.stage()
    with pytest.raises(KeyRevocationError):
        keys.close()
    (entry,) = ledger.entries()
    assert entry.record.key_id == "id-app" and "500" in (entry.record.error or "")

    assert revoke_recorded(host, ledger, entry) == "forge said 500 for id-app"
    assert len(ledger.entries()) == 1  # still recorded for the next try
    forge.fail_revoke.clear()
    assert revoke_recorded(host, ledger, ledger.entries()[0]) is None
    assert forge.live == {} and ledger.entries() == []


def test_a_record_without_an_id_is_revoked_by_finding_the_key_by_its_title(
    tmp_path: Path, bot_bottle_host: PluginHost
) -> None:
    """The launcher died while the forge was answering: the record has no id;
    cleanup's path finds the key on the forge and revokes it."""
    forge = _Forge()
    forge.live["id-app"] = "app"  # the forge made it, the launcher never heard
    ledger = _ledger(tmp_path)
    entry = ledger.begin(
        KeyRecord("testforge", "b1", "app", "forge.test", "/team/app.git", {"team": "t"})
    )
    assert revoke_recorded(_host(bot_bottle_host, forge), ledger, entry) is None
    assert forge.live == {} and ledger.entries() == []
