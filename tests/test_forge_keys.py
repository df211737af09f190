"""The gitea, github and gitlab key provisioners against local HTTPS forges that
validate every request against the forge's published OpenAPI description
(tests/fake_forge.py): create, revoke, find by title, and each failure a user
meets as an ``error:``/``hint:`` that names what to fix and never the token."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot_bottle.contracts.keys import KeyProvisioner, KeyRequest
from bot_bottle.errors import KeyRevocationError
from bot_bottle.forge_kit import ForgeError, ForgeKeyOptions
from bot_bottle.plugins import PluginHost
from tests.fake_forge import FakeForge, Kind, fake_forge

TOKEN = "tok-REAL-forge-api-token-7f3a91"
TOKEN_VAR = "BB_TEST_FORGE_TOKEN"


@pytest.fixture(params=["gitea", "forgejo", "github", "gitlab"])
def forge(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeForge]:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    with fake_forge(tmp_path, request.param, token=TOKEN, repos={("team", "app")}) as f:
        yield f
    assert f.violations == [], "requests the real forge would reject"


def _provisioner(kind: Kind) -> KeyProvisioner:
    # Forgejo keeps Gitea's API: the 'gitea' provisioner serves it.
    name = "gitea" if kind == "forgejo" else kind
    return PluginHost(environ={}).load().create("key_provisioners", name)


def _request(forge: FakeForge, path: str = "/team/app.git", **opts: object) -> KeyRequest:
    options = ForgeKeyOptions.model_validate(
        {
            "base_url": forge.base_url,
            "token_ref": TOKEN_VAR,
            "ca_file": str(forge.ca_pem),
            "timeout": 5,
            **opts,
        }
    )
    return KeyRequest(
        bottle_slug="dev-1a2b",
        repo_name="app",
        host="forge.test",
        path=path,
        options=options,
    )


SCOPE = {
    "gitea": "write:repository",
    "forgejo": "write:repository",
    "github": "Administration",
    "gitlab": "'api' scope",
}


def test_create_registers_a_fresh_ed25519_key_titled_for_the_bottle(
    forge: FakeForge, tmp_path: Path
) -> None:
    prov = _provisioner(forge.kind)
    reported: list[str] = []
    req = _request(forge)
    req = KeyRequest(**{**req.__dict__, "on_created": reported.append})
    key = prov.create(req)
    (live,) = forge.live_keys()
    assert reported == [key.key_id] == [str(live.id)]
    assert live.title == "bot-bottle:dev-1a2b:app" and not live.read_only
    assert live.key == key.public_key and key.public_key.startswith("ssh-ed25519 ")
    # The private half is an OpenSSH key whose public half is the one registered.
    private = tmp_path / "k"
    private.write_text(key.private_key.reveal())
    private.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    assert derived == key.public_key.split()[:2]
    assert TOKEN not in repr(key)
    header = {"github": f"Bearer {TOKEN}", "gitlab": TOKEN}.get(forge.kind, f"token {TOKEN}")
    assert forge.auth_headers == [header]


def test_revoke_deletes_the_key_and_a_key_already_gone_counts_as_revoked(
    forge: FakeForge,
) -> None:
    prov = _provisioner(forge.kind)
    req = _request(forge, read_only=True)
    key = prov.create(req)
    assert forge.live_keys()[0].read_only
    prov.revoke(req, key.key_id)
    assert forge.live_keys() == []
    prov.revoke(req, key.key_id)  # 404: nothing left to revoke


def test_find_keys_lists_this_bottles_keys_by_title(forge: FakeForge) -> None:
    prov = _provisioner(forge.kind)
    mine = prov.create(_request(forge))
    other = _request(forge, title_prefix="someone-else")
    prov.create(other)
    assert prov.find_keys(_request(forge)) == [mine.key_id]


def test_a_failed_delete_is_a_loud_revocation_error(forge: FakeForge) -> None:
    prov = _provisioner(forge.kind)
    req = _request(forge)
    key = prov.create(req)
    forge.fail_delete = True
    with pytest.raises(KeyRevocationError, match="answered 500") as err:
        prov.revoke(req, key.key_id)
    assert TOKEN not in str(err.value) and TOKEN not in (err.value.hint or "")


def _error(forge: FakeForge, req: KeyRequest) -> ForgeError:
    with pytest.raises(ForgeError) as err:
        _provisioner(forge.kind).create(req)
    assert TOKEN not in err.value.message and TOKEN not in (err.value.hint or "")
    assert err.value.hint
    return err.value


def test_a_wrong_token_is_401_naming_the_variable_and_the_scope(
    forge: FakeForge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VAR, "tok-wrong")
    err = _error(forge, _request(forge))
    assert "(401)" in err.message and f"${TOKEN_VAR}" in err.message
    assert SCOPE[forge.kind] in (err.hint or "")
    assert not err.maybe_created and forge.live_keys() == []


def test_a_token_without_the_scope_is_403_naming_the_scope(forge: FakeForge) -> None:
    forge.token_lacks_scope = True
    err = _error(forge, _request(forge))
    assert "(403)" in err.message and "team/app" in err.message
    assert SCOPE[forge.kind] in (err.hint or "")


def test_an_unknown_repository_is_404_pointing_at_the_url(forge: FakeForge) -> None:
    err = _error(forge, _request(forge, path="/team/nope.git"))
    assert "no repository team/nope (404)" in err.message
    assert "git-gate url" in (err.hint or "")


def test_a_key_title_already_in_use_is_refused_with_the_forges_reason(forge: FakeForge) -> None:
    _provisioner(forge.kind).create(_request(forge))
    err = _error(forge, _request(forge))
    status = "(400)" if forge.kind == "gitlab" else "(422)"  # GitLab answers 400
    assert status in err.message and "already exists" in (err.hint or "")
    assert ("has already been taken" if forge.kind == "gitlab" else "has been used") in err.message


def test_a_forge_that_does_not_answer_in_time_is_a_timeout(forge: FakeForge) -> None:
    forge.post_delay = 2.5
    err = _error(forge, _request(forge, timeout=1))
    assert "did not answer within 1s" in err.message
    assert err.maybe_created  # the forge may still make it: core searches by title


def test_an_untrusted_certificate_is_a_tls_error_pointing_at_ca_file(forge: FakeForge) -> None:
    err = _error(forge, _request(forge, ca_file=None))
    assert "TLS to" in err.message and "ca_file" in (err.hint or "")
    assert forge.seen == []


def test_an_unset_token_variable_is_named(
    forge: FakeForge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VAR)
    err = _error(forge, _request(forge))
    assert f"${TOKEN_VAR} is not set" in err.message and forge.seen == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"base_url": "http://forge.test", "token_ref": "T"}, "https://"),
        ({"base_url": "https://forge.test", "token_ref": "ghp_abc-123"}, "NAME"),
        ({"base_url": "https://forge.test", "token_ref": "T", "title_prefix": "a b"}, "letters"),
        ({"base_url": "https://forge.test", "token_ref": "T", "tokn": "x"}, "Extra inputs"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], problem: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        ForgeKeyOptions.model_validate(options)


def test_the_fake_refuses_what_the_spec_does_not_allow(tmp_path: Path) -> None:
    """The fake is strict: a body without the spec's required 'key', an
    undeclared query parameter and an undeclared path are violations."""
    import httpx2

    with fake_forge(tmp_path, "gitea", token=TOKEN, repos={("team", "app")}) as f:
        ctx = ssl.create_default_context(cafile=str(f.ca_pem))
        with httpx2.Client(verify=ctx, timeout=5) as c:
            auth = {"Authorization": f"token {TOKEN}"}
            url = f"{f.base_url}/api/v1/repos/team/app/keys"
            assert c.post(url, json={"title": "t"}, headers=auth).status_code == 422
            assert c.get(url, params={"per_page": "5"}, headers=auth).status_code == 400
            assert c.get(f"{f.base_url}/api/v1/repos/team/app/deploy_keys").status_code == 404
        assert len(f.violations) == 3


def test_gitlab_addresses_a_project_in_a_subgroup_by_its_encoded_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    with fake_forge(tmp_path, "gitlab", token=TOKEN, repos={("grp/sub", "proj")}) as f:
        prov = _provisioner("gitlab")
        req = _request(f, path="/grp/sub/proj.git", read_only=True)
        key = prov.create(req)
        (live,) = f.live_keys()
        assert (live.owner, live.repo, live.read_only) == ("grp/sub", "proj", True)
        assert f.seen == [("POST", "/api/v4/projects/grp%2Fsub%2Fproj/deploy_keys")]
        prov.revoke(req, key.key_id)
        assert f.live_keys() == [] and f.violations == []


def test_ca_file_with_a_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = ForgeKeyOptions.model_validate(
        {"base_url": "https://forge.test", "token_ref": "T", "ca_file": "~/ca.pem"}
    )
    assert opts.ca_file == str(tmp_path / "ca.pem")
