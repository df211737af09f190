"""git-gate planning: strict validation, the daemon config, agent git config, known_hosts."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from bot_bottle.gitgate.config import GateConfig
from bot_bottle.gitgate.plan import plan_git_gate
from bot_bottle.gitgate.spec import GateKey, GateRepoSpec, GitGateError, SshUrl, check_host_key


def _key_line(kind: str = "ssh-ed25519") -> str:
    raw = kind.encode()
    blob = len(raw).to_bytes(4, "big") + raw + len(b"k" * 32).to_bytes(4, "big") + b"k" * 32
    return f"{kind} {base64.b64encode(blob).decode()}"


HOST_KEY = _key_line()
URL = "ssh://git@forge.test/team/app.git"


def _spec(name: str = "app", url: str = URL, host_key: str = HOST_KEY) -> GateRepoSpec:
    return GateRepoSpec(name=name, url=url, host_key=host_key, key=GateKey.static("/keys/app"))


HOSTILE = ["a'b", 'a"b', "a b", "a;b", "a\nb", "a`b", "a$(id)", "a|b", "a\\b"]


@pytest.mark.parametrize("name", [*HOSTILE, "", ".", "..", "a/b", "ä"])
def test_hostile_repo_names_are_rejected_with_a_hint(name: str) -> None:
    with pytest.raises(GitGateError) as err:
        _spec(name=name)
    assert err.value.hint and "letters, digits" in err.value.hint


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_urls_are_rejected(bad: str) -> None:
    with pytest.raises(GitGateError):
        _spec(url=f"ssh://git@forge.test/team/{bad}.git")


@pytest.mark.parametrize(
    "url",
    [
        "git@forge.test:team/app.git",  # scp style
        "https://forge.test/team/app.git",
        "ssh://forge.test/team/app.git",  # no user
        "ssh://-oProxyCommand=x@forge.test/app.git",  # option injection via user
        "ssh://git@-oProxyCommand=x/app.git",  # ... via host
        "ssh://git@forge.test:0/app.git",
        "ssh://git@forge.test:99999/app.git",
        "ssh://git@forge.test/",
        "ssh://git@forge.test/team/../etc",
        "ssh://git@forge.test",
    ],
)
def test_malformed_urls_are_rejected(url: str) -> None:
    with pytest.raises(GitGateError):
        SshUrl.parse(url)


def test_url_parts_are_parsed() -> None:
    u = SshUrl.parse("ssh://git@Forge.Test:2222/~team/app.git")
    assert (u.user, u.host, u.port, u.path) == ("git", "forge.test", 2222, "/~team/app.git")
    assert u.known_hosts_name == "[forge.test]:2222"
    assert SshUrl.parse("ssh://git@[::1]:22/r").url == "ssh://git@[::1]/r"


@pytest.mark.parametrize(
    "value",
    [
        "ssh-ed25519",
        "ssh-ed25519 not base64!",
        f"{HOST_KEY}\nforge.test {HOST_KEY}",
        "ssh-dss AAAAB3NzaC1kc3MAAACB",
        f"ssh-rsa {HOST_KEY.split()[1]}",  # blob says ed25519
    ],
)
def test_bad_host_keys_are_rejected(value: str) -> None:
    with pytest.raises(GitGateError):
        check_host_key(value)


def test_host_key_comment_is_dropped() -> None:
    assert check_host_key(f"  {HOST_KEY} root@forge  ") == HOST_KEY


def test_plan_pins_host_keys_per_repo_with_port() -> None:
    plan = plan_git_gate(
        [_spec(), _spec("lib", "ssh://git@forge.test:2222/team/lib.git")], sidecar_root="/gate"
    )
    assert plan.known_hosts["app"] == f"forge.test {HOST_KEY}\n"
    assert plan.known_hosts["lib"] == f"[forge.test]:2222 {HOST_KEY}\n"
    assert plan.files()["known_hosts/lib"] == plan.known_hosts["lib"]


def test_plan_config_is_valid_json_without_key_material(tmp_path: Path) -> None:
    key = tmp_path / "deploy"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETDATA\n")
    spec = GateRepoSpec("app", URL, HOST_KEY, GateKey.static(key))
    plan = plan_git_gate([spec], sidecar_root="/gate", detectors=["token_patterns"])
    text = plan.files()["config.json"]
    assert "SECRETDATA" not in text and str(key) not in text
    data = json.loads(text)
    assert data["repos"][0] == {
        "name": "app",
        "upstream": URL,
        "known_hosts": "/gate/known_hosts/app",
        "key_file": "/gate/keys/app",
    }
    (tmp_path / "config.json").write_text(text)
    assert GateConfig.load(tmp_path / "config.json") == plan.config


def test_config_load_rejects_hostile_names_with_a_clear_error(tmp_path: Path) -> None:
    data = json.loads(plan_git_gate([_spec()], sidecar_root="/gate").config.to_json())
    data["repos"][0]["name"] = "x'; touch /tmp/pwned; '"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GitGateError, match=r"repos\.0\.name"):
        GateConfig.load(path)


def test_duplicate_repo_names_are_rejected() -> None:
    with pytest.raises(GitGateError, match="twice"):
        plan_git_gate([_spec(), _spec()])


def test_agent_git_config_rewrites_upstream_with_insteadof(tmp_path: Path) -> None:
    plan = plan_git_gate([_spec()], gate_host="git-gate", gate_port=9418)
    assert plan.git_config_entries() == [
        ("url.git://git-gate:9418/app.git.insteadOf", URL),
        ("url.git://git-gate:9418/app.git.insteadOf", "git@forge.test:team/app.git"),
    ]
    # Real git reads the rendered fragment and rewrites both spellings;
    # insteadOf (not pushInsteadOf) so fetches are rerouted too.
    cfg = tmp_path / "gitconfig"
    cfg.write_text(plan.render_gitconfig())
    env = {"GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}
    subprocess.run(["git", "init", "-q", str(tmp_path / "r")], check=True, env=env)
    for url in (URL, "git@forge.test:team/app.git"):
        subprocess.run(
            ["git", "-C", str(tmp_path / "r"), "remote", "add", f"o{len(url)}", url],
            check=True,
            env=env,
        )
        got = subprocess.run(
            ["git", "-C", str(tmp_path / "r"), "remote", "get-url", f"o{len(url)}"],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert got == "git://git-gate:9418/app.git"
    assert "pushInsteadOf" not in plan.render_gitconfig()


def test_upstream_spelled_differently_is_rewritten_in_both_spellings() -> None:
    plan = plan_git_gate([_spec(url="ssh://git@Forge.Test:22/team/app.git")], gate_host="gg")
    assert [u for _, u in plan.insteadof()] == [
        "ssh://git@Forge.Test:22/team/app.git",
        "ssh://git@forge.test/team/app.git",
        "git@forge.test:team/app.git",
    ]


def test_git_config_argv_has_no_shell() -> None:
    argv = plan_git_gate([_spec()]).git_config_argv()
    assert argv[0][:4] == ["git", "config", "--global", "--add"]


def test_plan_does_not_read_key_files() -> None:
    # Provisioned keys exist only at launch; a plan-time check broke them.
    spec = GateRepoSpec("app", URL, HOST_KEY, GateKey.static("/does/not/exist"))
    assert plan_git_gate([spec]).keys[0].sidecar_path.endswith("/keys/app")


def test_static_key_without_path_is_rejected() -> None:
    with pytest.raises(GitGateError, match="path"):
        GateRepoSpec("app", URL, HOST_KEY, GateKey("static"))


def test_bad_gate_host_is_rejected() -> None:
    with pytest.raises(GitGateError):
        plan_git_gate([_spec()], gate_host="git gate")
