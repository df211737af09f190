"""The Claude provider: discovery, options through the manifest, plan, argv."""

from __future__ import annotations

from pathlib import Path

import pytest
from bot_bottle_testkit.manifest import write_home

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import AgentProvider, ProvisionContext
from bot_bottle.errors import BotBottleError
from bot_bottle.manifest import Manifest, ManifestError
from bot_bottle.plugins import PluginHost, Source, Status
from bot_bottle_claude.provider import API_HOST, ClaudeOptions, ClaudeProvider

TOKEN = "sk-ant-oat01-unit-test-token-value"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost(environ={}, contrib=Path("/nonexistent")).load()


def test_claude_is_discovered_through_its_entry_point(host: PluginHost) -> None:
    comp = host.component("agent_providers", "claude")
    assert comp.distribution == "bot-bottle-claude"
    assert (host.infos["claude"].source, host.infos["claude"].status) == (
        Source.ENTRY_POINT,
        Status.ACTIVE,
    )
    provider = comp.create()
    assert isinstance(provider, AgentProvider) and provider.name == "claude"


def _bottle(tmp_path: Path, frontmatter: str) -> Path:
    return write_home(tmp_path, frontmatter)


def test_a_bottle_with_template_claude_and_auth_token_loads(
    tmp_path: Path, host: PluginHost
) -> None:
    home = _bottle(tmp_path, "agent_provider:\n  template: claude\n  auth_token: CLAUDE_TOK\n")
    agent = Manifest(home=home, host=host).agent("coder")
    options = agent.resolved_bottle.provider_options
    assert isinstance(options, ClaudeOptions)
    assert options.auth_token == "CLAUDE_TOK"


def test_an_unknown_option_is_rejected_with_a_suggestion(tmp_path: Path, host: PluginHost) -> None:
    home = _bottle(tmp_path, "agent_provider:\n  template: claude\n  auth_tokn: CLAUDE_TOK\n")
    with pytest.raises(ManifestError) as info:
        Manifest(home=home, host=host).agent("coder")
    text = str(info.value)
    assert "auth_tokn" in text and "did you mean 'auth_token'" in text
    assert "dev.md" in text


def test_a_token_pasted_as_auth_token_is_refused_without_echoing_it(
    tmp_path: Path, host: PluginHost
) -> None:
    home = _bottle(tmp_path, f"agent_provider:\n  template: claude\n  auth_token: {TOKEN}\n")
    with pytest.raises(ManifestError) as info:
        Manifest(home=home, host=host).agent("coder")
    assert "NAME of a host environment variable" in str(info.value)
    assert TOKEN not in str(info.value)


def test_the_plan_gives_the_agent_a_placeholder_and_egress_the_token() -> None:
    plan = ClaudeProvider().plan(ClaudeOptions(auth_token="TOK"), host_env={"TOK": TOKEN})
    assert plan.env["CLAUDE_CODE_OAUTH_TOKEN"] == kit.PLACEHOLDER
    assert plan.env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert TOKEN not in repr(plan) and all(TOKEN not in v for v in plan.env.values())
    (route,) = plan.routes
    assert (route.host, route.auth_scheme) == (API_HOST, "Bearer")
    assert route.token is not None and route.token.reveal() == TOKEN
    assert plan.user == "agent" and plan.skills_dir == "/home/agent/.claude/skills"


def test_a_missing_host_variable_is_a_clear_error() -> None:
    with pytest.raises(BotBottleError) as info:
        ClaudeProvider().plan(ClaudeOptions(auth_token="NOPE_TOKEN"), host_env={})
    assert "NOPE_TOKEN" in str(info.value) and "is not set" in str(info.value)
    assert info.value.hint and "claude setup-token" in info.value.hint


def test_an_empty_host_variable_is_a_clear_error() -> None:
    with pytest.raises(BotBottleError, match="is empty"):
        ClaudeProvider().plan(ClaudeOptions(auth_token="T"), host_env={"T": " "})


def test_without_auth_token_the_route_injects_nothing() -> None:
    plan = ClaudeProvider().plan(ClaudeOptions(), host_env={})
    (route,) = plan.routes
    assert (route.host, route.auth_scheme, route.token) == (API_HOST, None, None)
    assert "CLAUDE_CODE_OAUTH_TOKEN" not in plan.env


def _ctx(prompt: str) -> ProvisionContext:
    plan = ClaudeProvider().plan(ClaudeOptions(), host_env={})
    return ProvisionContext(plan=plan, ca_cert_path="/ca.crt", supervise_url=None, prompt=prompt)


def test_argv_shapes() -> None:
    provider = ClaudeProvider()
    ctx = _ctx("Be terse.")
    assert provider.interactive_argv(ctx) == [
        "claude",
        "--dangerously-skip-permissions",
        "--append-system-prompt-file",
        "/home/agent/.bot-bottle/prompt.md",
    ]
    argv = provider.headless_argv(ctx, "-fix the bug")
    assert argv[:2] == ["claude", "-p"]
    assert argv[-2:] == ["--", "-fix the bug"]
    assert "--append-system-prompt-file" not in provider.interactive_argv(_ctx(""))


def test_the_image_is_the_dockerfile_beside_the_module(tmp_path: Path) -> None:
    spec = ClaudeProvider().image(ClaudeOptions())
    assert spec.dockerfile.name == "Dockerfile" and spec.dockerfile.is_file()
    assert "@anthropic-ai/claude-code" in spec.dockerfile.read_text()
    custom = ClaudeProvider().image(ClaudeOptions(dockerfile=tmp_path / "D"))
    assert custom.dockerfile == tmp_path / "D"


def test_the_status_line_script_quotes_the_label() -> None:
    from bot_bottle_claude.provider import statusline_script

    script = statusline_script(kit.printable("it's $(rm -rf /)\n"), "red")
    assert "'it'\"'\"'s $(rm -rf /)'" in script
