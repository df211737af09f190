"""The Codex provider: discovery, options, the forwarded login, argv."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import ProvisionContext
from bot_bottle.errors import BotBottleError
from bot_bottle.manifest.parse import validate_options
from bot_bottle.plugins import PluginHost
from bot_bottle_codex.auth import CodexAuthError, jwt_claims
from bot_bottle_codex.provider import (
    API_HOST,
    CHATGPT_HOST,
    CodexOptions,
    CodexPlan,
    CodexProvider,
    config_toml,
)

EXP = int(time.time()) + 3 * 86400


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(b'REAL-signature-0123456789')}"


ACCESS = make_jwt({"exp": EXP, "iat": EXP - 864000, "https://api.openai.com/auth": {"x": 1}})
ID_TOKEN = make_jwt(
    {"exp": EXP, "email": "dev@example.test",
     "https://api.openai.com/auth": {"chatgpt_plan_type": "plus", "chatgpt_account_id": "a-1"}}
)  # fmt: skip


def _home(tmp_path: Path, auth: object) -> dict[str, str]:
    codex = tmp_path / "h" / ".codex"
    codex.mkdir(parents=True)
    (codex / "auth.json").write_text(json.dumps(auth) if not isinstance(auth, str) else auth)
    return {"HOME": str(tmp_path / "h")}


def _chatgpt_login() -> dict[str, object]:
    return {
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": ID_TOKEN, "access_token": ACCESS,
                   "refresh_token": "rt-REAL", "account_id": "a-1"},
        "last_refresh": "2026-11-20T10:00:00Z",
    }  # fmt: skip


def test_codex_is_discovered_through_its_entry_point() -> None:
    host = PluginHost(environ={}, contrib=Path("/nonexistent")).load()
    comp = host.component("agent_providers", "codex")
    assert comp.distribution == "bot-bottle-codex"
    assert comp.create().name == "codex"


def test_options_are_strict() -> None:
    options = validate_options(CodexOptions, {"forward_host_credentials": True})
    assert options.forward_host_credentials
    with pytest.raises(ValueError, match="forward_host_credentials"):
        validate_options(CodexOptions, {"forward_host_credentials": "yes"})
    with pytest.raises(ValueError, match="extra"):
        validate_options(CodexOptions, {"forward_credentials": True})


def test_the_dummy_login_has_the_real_expiry_and_no_real_token(tmp_path: Path) -> None:
    plan = CodexProvider().plan(
        CodexOptions(forward_host_credentials=True), host_env=_home(tmp_path, _chatgpt_login())
    )
    assert isinstance(plan, CodexPlan) and plan.agent_auth_json
    agent = json.loads(plan.agent_auth_json)
    for name in ("access_token", "id_token"):
        dummy = agent["tokens"][name]
        assert jwt_claims(dummy, what=name)["exp"] == EXP
        assert dummy not in (ACCESS, ID_TOKEN)
    # No piece of a real token (header, claims, signature) and not the refresh token.
    for real in (ACCESS, ID_TOKEN):
        for part in real.split("."):
            assert part not in plan.agent_auth_json
    assert "rt-REAL" not in plan.agent_auth_json
    claims = jwt_claims(agent["tokens"]["id_token"], what="id")
    assert claims["https://api.openai.com/auth"]["chatgpt_plan_type"] == "plus"
    assert agent["tokens"]["account_id"] == "a-1"


def test_the_real_access_token_rides_the_chatgpt_route_only(tmp_path: Path) -> None:
    plan = CodexProvider().plan(
        CodexOptions(forward_host_credentials=True), host_env=_home(tmp_path, _chatgpt_login())
    )
    routes = {r.host: r for r in plan.routes}
    assert set(routes) == {CHATGPT_HOST, API_HOST}
    token = routes[CHATGPT_HOST].token
    assert token is not None and token.reveal() == ACCESS
    assert routes[CHATGPT_HOST].auth_scheme == "Bearer"
    assert routes[API_HOST].token is None
    assert ACCESS not in repr(plan) and all(ACCESS not in v for v in plan.env.values())
    assert plan.env["CODEX_CA_CERTIFICATE"] == kit.GUEST_CA_PATH


def test_an_api_key_login_is_forwarded_for_the_api_host(tmp_path: Path) -> None:
    env = _home(tmp_path, {"OPENAI_API_KEY": "sk-proj-REAL", "tokens": None})
    plan = CodexProvider().plan(CodexOptions(forward_host_credentials=True), host_env=env)
    routes = {r.host: r for r in plan.routes}
    token = routes[API_HOST].token
    assert token is not None and token.reveal() == "sk-proj-REAL"
    assert plan.env["OPENAI_API_KEY"] == kit.PLACEHOLDER
    assert "sk-proj-REAL" not in (plan.agent_auth_json or "")


def test_a_missing_login_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CodexAuthError) as info:
        CodexProvider().plan(
            CodexOptions(forward_host_credentials=True), host_env={"HOME": str(tmp_path)}
        )
    assert str(tmp_path / ".codex" / "auth.json") in str(info.value)
    assert info.value.hint and "codex login" in info.value.hint


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"tokens": {"access_token": "not-a-jwt"}}, "not a JWT"),
        ({"tokens": None, "OPENAI_API_KEY": None}, "neither ChatGPT tokens nor an API key"),
    ],
)
def test_a_broken_login_is_a_clear_error_without_its_content(
    tmp_path: Path, content: object, message: str
) -> None:
    with pytest.raises(BotBottleError, match=message) as info:
        CodexProvider().plan(
            CodexOptions(forward_host_credentials=True), host_env=_home(tmp_path, content)
        )
    assert "not-a-jwt" not in str(info.value)


def test_an_expired_login_is_refused(tmp_path: Path) -> None:
    login = _chatgpt_login()
    login["tokens"] = {"access_token": make_jwt({"exp": int(time.time()) - 60})}
    with pytest.raises(CodexAuthError, match="expired"):
        CodexProvider().plan(
            CodexOptions(forward_host_credentials=True), host_env=_home(tmp_path, login)
        )


def test_codex_home_option_and_env_are_honoured(tmp_path: Path) -> None:
    env = _home(tmp_path, _chatgpt_login())
    moved = tmp_path / "elsewhere"
    (tmp_path / "h" / ".codex").rename(moved)
    provider = CodexProvider()
    plan = provider.plan(
        CodexOptions(forward_host_credentials=True, codex_home=str(moved)), host_env=env
    )
    assert plan.agent_auth_json
    plan = provider.plan(
        CodexOptions(forward_host_credentials=True), host_env={**env, "CODEX_HOME": str(moved)}
    )
    assert plan.agent_auth_json


def test_without_forwarding_nothing_is_read_or_injected(tmp_path: Path) -> None:
    plan = CodexProvider().plan(CodexOptions(), host_env={"HOME": str(tmp_path)})
    assert all(r.token is None for r in plan.routes)
    assert plan.agent_auth_json is None


def test_argv_shapes() -> None:
    provider = CodexProvider()
    plan = provider.plan(CodexOptions(), host_env={})
    ctx = ProvisionContext(plan=plan, ca_cert_path="/ca", supervise_url=None)
    assert provider.interactive_argv(ctx) == ["codex", "--dangerously-bypass-approvals-and-sandbox"]
    argv = provider.headless_argv(ctx, "-do it")
    assert argv[:2] == ["codex", "exec"] and argv[-2:] == ["--", "-do it"]


def test_config_toml_turns_codex_own_sandbox_off_and_uses_the_file_store() -> None:
    lines = config_toml().splitlines()
    assert 'sandbox_mode = "danger-full-access"' in lines
    assert 'approval_policy = "never"' in lines
    assert 'cli_auth_credentials_store = "file"' in lines
