"""Claude Code, Codex and a drop-in provider in real bottles started by the
Docker backend: agent container with no network, relay, sidecar bundle with
the real egress, git-gate and supervise daemons.

The model APIs are local HTTPS servers (tests/fake_anthropic.py) on the
gateway of a network the test creates; the bottle's own ``extra_hosts`` pins
``api.anthropic.com`` / ``chatgpt.com`` there and its ``egress.upstream_ca``
trusts their test CA -- the same knobs a user has. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bot_bottle import provider_kit as kit
from bot_bottle_codex.auth import jwt_claims
from tests.bottle_kit import (
    HOST_CA,
    Launched,
    assert_nowhere,
    launched,
    outside_network,
    write_agent,
)
from tests.conftest import REPO
from tests.fake_anthropic import FakeAnthropic, fake_anthropic
from tests.provider_bottle import screen_text
from tests.sshd_upstream import SshRemote, ssh_remote
from tests.test_provider_images import make_jwt

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

REAL_TOKEN = "sk-ant-oat01-REAL-in-bottle-token-4c1d9e"
REPLY = "hello from the fake API, through the bottle"
SUPERVISE = "http://127.0.0.1:8765/mcp"
LABEL = "night shift"


@dataclass
class World:
    gateway: str
    home: Path
    host_home: Path
    api: FakeAnthropic
    remote: SshRemote


@pytest.fixture(scope="module")
def world(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The outside: one network, one HTTPS server answering for both model
    APIs on its gateway:443, a git remote over sshd on the same address; a
    bot-bottle home and a host HOME."""
    tmp = tmp_path_factory.mktemp("providers")
    with (
        outside_network(docker_client) as gateway,
        fake_anthropic(
            tmp / "pki",
            hosts=["api.anthropic.com", "chatgpt.com"],
            reply=REPLY,
            bind=gateway,
            port=443,
        ) as api,
        ssh_remote(tmp / "ssh", gateway) as remote,
    ):
        remote.new_repo("proj")
        home = tmp / "bot-bottle-home"
        host_home = tmp / "host-home"
        (host_home / ".claude" / "skills" / "greet").mkdir(parents=True)
        (host_home / ".claude" / "skills" / "greet" / "SKILL.md").write_text(
            "---\nname: greet\n---\nSay hello.\n"
        )
        yield World(gateway, home, host_home, api, remote)


def _pins(world: World, *hosts: str) -> str:
    pins = "".join(f"  {h}: {world.gateway}\n" for h in hosts)
    return f"egress:\n  log: full\n  upstream_ca: {world.api.ca_pem}\nextra_hosts:\n{pins}"


def _git_gate(world: World) -> str:
    r = world.remote
    return (
        "git_user:\n  name: Bottled Claude\n  email: claude@bottle.test\n"
        f"git_gate:\n  repos:\n    - name: proj\n      url: {r.url('proj')}\n"
        f"      host_key: {r.host_key}\n"
        f"      key: {{provider: static, path: {r.deploy_key}}}\n"
    )


# -- Claude Code -------------------------------------------------------------------


@pytest.fixture(scope="module")
def claude(world: World) -> Iterator[Launched]:
    write_agent(
        world.home,
        "claude-bot",
        "---\nagent_provider:\n  template: claude\n  auth_token: CLAUDE_TOK\n"
        f"skills: [greet]\n{_git_gate(world)}{_pins(world, 'api.anthropic.com')}---\n",
        prompt="You are the in-bottle test agent.",
    )
    host_env = {**os.environ, "HOME": str(world.host_home), "CLAUDE_TOK": REAL_TOKEN}
    with launched(world.home, "claude-bot", host_env=host_env, label=LABEL) as bottle:
        yield bottle


def test_claude_runs_and_registered_supervise_is_connected(claude: Launched) -> None:
    assert "(Claude Code)" in claude.as_agent("claude", "--version")
    listing = claude.as_agent("claude", "mcp", "list")
    # "Connected": Claude Code's health check reached the supervise daemon
    # through the relay, not only a config entry.
    (line,) = [ln for ln in listing.splitlines() if ln.startswith("supervise:")]
    assert SUPERVISE in line and "Connected" in line, listing


def test_claude_skill_and_prompt_are_provisioned(claude: Launched) -> None:
    plan = claude.plan.provider_plan
    assert "Say hello." in claude.as_agent("cat", f"{plan.skills_dir}/greet/SKILL.md")
    assert "in-bottle test agent" in claude.as_agent("cat", plan.prompt_path or "")


def test_claude_starts_interactively_in_the_bottle_with_its_label(claude: Launched) -> None:
    """What ``bot-bottle start`` attaches to: on a real terminal, in the
    bottle's working directory, no onboarding or trust dialog; the label is
    in the status line."""
    workdir = claude.running.workdir
    argv = kit.agent_argv(claude.plan.provider_plan, claude.provider.interactive_argv(claude.ctx))
    screen = screen_text(
        claude.running.container.id, argv, until=[LABEL, "bypass permissions"], workdir=workdir
    )
    assert LABEL in screen and "bypass permissions" in screen, screen[-2000:]
    assert "trust this folder" not in screen


def test_claude_agent_holds_only_the_placeholder(claude: Launched) -> None:
    env = claude.as_agent("env")
    assert f"CLAUDE_CODE_OAUTH_TOKEN={kit.PLACEHOLDER}" in env
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in env
    assert REAL_TOKEN not in env
    assert_nowhere(claude.running, REAL_TOKEN, claude.plan.provider_plan)


def test_claude_headless_reaches_the_api_with_the_real_token_injected(
    claude: Launched, world: World
) -> None:
    before = len(world.api.messages())
    argv = claude.provider.headless_argv(claude.ctx, "say hello")
    out = claude.as_agent(*argv)
    assert REPLY in out
    calls = world.api.messages()[before:]
    assert calls, "claude -p never reached the API"
    # Egress swapped the agent's placeholder for the real token...
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {REAL_TOKEN}"}
    # ...and the request is the agent's: its system prompt file is in it.
    assert any(b"in-bottle test agent" in c.body for c in calls)
    # The agent never saw the real token, before or after the call.
    assert_nowhere(claude.running, REAL_TOKEN, claude.plan.provider_plan)


def test_claude_calls_the_supervise_mcp_tool_in_the_bottle(claude: Launched, world: World) -> None:
    """The model (the fake) asks for supervise's ``list-egress-routes``; Claude
    Code calls it over MCP through the relay and sends the live route table
    back as the tool result -- the path an agent uses to ask for help."""
    world.api.tool_call = ("mcp__supervise__list-egress-routes", {})
    before = len(world.api.messages())
    try:
        argv = claude.provider.headless_argv(claude.ctx, "which hosts can you reach?")
        out = claude.as_agent(*argv)
    finally:
        world.api.tool_call = None
    calls = world.api.messages()[before:]
    offered = [c for c in calls if b"mcp__supervise__list-egress-routes" in c.body]
    assert offered, "supervise's tools were not offered to the model"
    results = [c for c in calls if b'"tool_use_id":"toolu_fake_call"' in c.body]
    assert results, f"no tool result came back: {[c.body[-500:] for c in calls]}"
    (content,) = [
        block["content"]
        for message in json.loads(results[-1].body)["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("tool_use_id") == "toolu_fake_call"
    ]
    assert REAL_TOKEN not in content
    routes = json.loads(content)["routes"]
    assert [(r["host"], r["auth"]["injected"], r["source"]) for r in routes] == [
        ("api.anthropic.com", True, "provider:claude")
    ]
    assert REPLY in out


def test_claude_bottle_pushes_through_git_gate_only_after_a_clean_scan(
    claude: Launched, world: World
) -> None:
    """The launcher applied the git config for a provider that does not know
    about git-gate: the declared ssh:// remote is rewritten to the gate, a
    clean push reaches the real sshd upstream with the bottle's git_user, and
    a push carrying a token is refused before the upstream is contacted."""
    remote, bare = world.remote, world.remote.bare("proj")
    config = claude.as_agent("git", "config", "--global", "--list")
    assert f"insteadof={remote.url('proj')}" in config
    assert "user.name=Bottled Claude" in config
    clone = (
        f"set -e; rm -rf ~/proj; git clone -q {remote.url('proj')} ~/proj; cd ~/proj; "
        "echo done > work.txt; git add work.txt; git commit -qm 'agent work'; "
        "git push -q origin HEAD:main"
    )
    claude.as_agent("bash", "-c", clone)
    assert remote.log_of(bare)[:2] == ["agent work", "initial"]
    author = subprocess.run(
        ["git", "-C", str(bare), "log", "-1", "--format=%an <%ae>", "main"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert author == "Bottled Claude <claude@bottle.test>"

    before = remote.connections()
    leak = (
        "set -e; cd ~/proj; echo 'token = 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' > cfg.txt; "
        "git add cfg.txt; git commit -qm 'add cfg'; git push origin HEAD:main 2>&1"
    )
    result = claude.running.exec(
        kit.agent_argv(claude.plan.provider_plan, ["bash", "-c", leak]), user="root"
    )
    out = (result.stdout + result.stderr).decode()
    assert result.exit_code != 0 and "git-gate" in out, out
    assert "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" not in out
    assert remote.log_of(bare)[0] == "agent work"
    assert remote.connections() == before, "the upstream was contacted"


# -- the user's path: bot-bottle run -p ------------------------------------------


def _bb_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_BOTTLE_")}
    env["BOT_BOTTLE_HOME"] = str(home)
    if HOST_CA.exists():
        env["BOT_BOTTLE_BUILD_CA_BUNDLE"] = str(HOST_CA)
    return {**env, **extra}


def test_bot_bottle_run_prompt_runs_claude_headless_in_a_bottle(
    claude: Launched, world: World
) -> None:
    """The claude bottle above stays up; this starts a second one through the
    CLI, as a user would: ``bot-bottle run claude-bot -p PROMPT``."""
    before = len(world.api.messages())
    r = subprocess.run(
        [sys.executable, "-m", "bot_bottle", "run", "claude-bot", "-p", "say hello"],
        env=_bb_env(world.home, HOME=str(world.host_home), CLAUDE_TOK=REAL_TOKEN),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert REPLY in r.stdout
    assert "Traceback" not in r.stderr
    calls = world.api.messages()[before:]
    assert calls and {c.headers["authorization"] for c in calls} == {f"Bearer {REAL_TOKEN}"}
    # Torn down: no container of a second claude-bot bottle is left.
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=bot-bottle.agent=claude-bot"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(left) == 3, left  # agent, relay, bundle of the fixture's bottle only


# -- Codex -----------------------------------------------------------------------------


@dataclass
class CodexBottle:
    bottle: Launched
    access: str
    exp: int
    secrets: tuple[str, ...]


@pytest.fixture(scope="module")
def codex(world: World) -> Iterator[CodexBottle]:
    exp = int(time.time()) + 5 * 86400
    auth = {"chatgpt_account_id": "acc-1", "chatgpt_plan_type": "plus"}
    access = make_jwt({"exp": exp, "https://api.openai.com/auth": auth})
    id_token = make_jwt(
        {"exp": exp, "email": "dev@example.test", "https://api.openai.com/auth": auth}
    )
    codex_home = world.host_home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    tokens = {"id_token": id_token, "access_token": access,
              "refresh_token": "rt-REAL-refresh-in-bottle", "account_id": "acc-1"}  # fmt: skip
    (codex_home / "auth.json").write_text(json.dumps({"OPENAI_API_KEY": None, "tokens": tokens}))
    write_agent(
        world.home,
        "codex-bot",
        "---\nagent_provider:\n  template: codex\n  forward_host_credentials: true\n"
        f"{_pins(world, 'chatgpt.com')}---\n",
    )
    host_env = {**os.environ, "HOME": str(world.host_home)}
    secrets = (access, id_token, "rt-REAL-refresh-in-bottle", access.split(".")[2])
    with launched(world.home, "codex-bot", host_env=host_env) as bottle:
        yield CodexBottle(bottle, access, exp, secrets)


def test_codex_runs_signed_in_with_a_dummy_login_of_the_real_expiry(codex: CodexBottle) -> None:
    b = codex.bottle
    assert b.as_agent("codex", "--version").startswith("codex-cli ")
    assert "Logged in using ChatGPT" in b.as_agent("codex", "login", "status")
    home = b.plan.provider_plan.guest_home
    auth = json.loads(b.as_agent("cat", f"{home}/.codex/auth.json"))
    assert auth["tokens"]["access_token"] != codex.access
    assert jwt_claims(auth["tokens"]["access_token"], what="dummy")["exp"] == codex.exp
    for secret in codex.secrets:
        assert_nowhere(b.running, secret, b.plan.provider_plan)


def test_codex_ca_variable_and_supervise_registration(codex: CodexBottle) -> None:
    b = codex.bottle
    env = b.as_agent("env")
    assert f"CODEX_CA_CERTIFICATE={kit.GUEST_CA_PATH}" in env
    assert "BEGIN CERTIFICATE" in b.as_agent("cat", kit.GUEST_CA_PATH)
    listing = b.as_agent("codex", "mcp", "list")
    assert "supervise" in listing and SUPERVISE in listing, listing


def test_codex_exec_sends_the_real_token_through_egress(codex: CodexBottle, world: World) -> None:
    """``codex exec`` talks to chatgpt.com through the bottle's egress: TLS to
    egress works only because CODEX_CA_CERTIFICATE names the bottle CA, and
    the server receives the host's real access token, never the dummy. The
    fake answers 404 to Codex's endpoints, so Codex fails after the request;
    the request is what is checked."""
    b = codex.bottle
    before = len(world.api.requests)
    argv = ["timeout", "90", *b.provider.headless_argv(b.ctx, "say hello")]
    b.running.exec(kit.agent_argv(b.plan.provider_plan, argv), user="root")
    calls = [r for r in world.api.requests[before:] if r.method == "POST"]
    assert calls, "codex never reached chatgpt.com through egress"
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {codex.access}"}
    assert calls[0].headers.get("chatgpt-account-id") == "acc-1"
    for secret in codex.secrets:
        assert_nowhere(b.running, secret, b.plan.provider_plan)


# -- a drop-in provider ------------------------------------------------------------------


def test_a_drop_in_provider_is_listed_and_launches_with_its_key_injected(
    world: World, tmp_path: Path
) -> None:
    """examples/contrib/generic-cli copied into the home's contrib/: listed by
    ``plugins list``, and ``bot-bottle run`` starts its bottle; the agent's
    request to its API goes out with the host's key, the agent holding the
    placeholder."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(REPO / "examples" / "contrib" / "generic-cli", home / "contrib" / "generic-cli")
    key = "drop-in-REAL-key-5b7e2a"
    write_agent(
        home,
        "cli-bot",
        "---\nagent_provider:\n  template: generic-cli\n  api_host: api.anthropic.com\n"
        f"  api_key: DROPIN_KEY\n  key_variable: MY_KEY\n{_pins(world, 'api.anthropic.com')}---\n",
        prompt="You are a drop-in agent.",
    )
    env = _bb_env(home, DROPIN_KEY=key)
    listed = subprocess.run(
        [sys.executable, "-m", "bot_bottle", "plugins", "list", "--json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["generic-cli"]["source"] == "contrib"
    assert plugins["generic-cli"]["components"] == {"agent_providers": ["generic-cli"]}

    before = len(world.api.messages())
    script = (
        'cat "$AGENT_PROMPT_FILE"; echo "key=$MY_KEY"; '
        'curl -sS -X POST -H "Authorization: Bearer $MY_KEY" -d "{}" '
        "https://api.anthropic.com/v1/messages"
    )
    r = subprocess.run(
        [sys.executable, "-m", "bot_bottle", "run", "cli-bot", "-p", script],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "You are a drop-in agent." in r.stdout
    assert f"key={kit.PLACEHOLDER}" in r.stdout and key not in r.stdout
    assert REPLY in r.stdout
    (call,) = world.api.messages()[before:]
    assert call.headers["authorization"] == f"Bearer {key}"


def test_an_upstream_reflecting_the_injected_credential_does_not_hand_it_to_the_agent(
    world: World, tmp_path: Path
) -> None:
    """An upstream that reflects the credential: the fake API's /v1/echo
    answers with the request headers, the Authorization egress injected among
    them. In a real bottle the agent
    gets the response cut (``credential-reflected``), never the key."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(REPO / "examples" / "contrib" / "generic-cli", home / "contrib" / "generic-cli")
    key = "reflected-REAL-key-9c4f1b"
    write_agent(
        home,
        "echo-bot",
        "---\nagent_provider:\n  template: generic-cli\n  api_host: api.anthropic.com\n"
        f"  api_key: DROPIN_KEY\n  key_variable: MY_KEY\n{_pins(world, 'api.anthropic.com')}---\n",
        prompt="You are a drop-in agent.",
    )
    before = len(world.api.requests)
    script = (
        'curl -sS https://api.anthropic.com/v1/echo; rc=$?; echo; echo "curl=$rc"; '
        'curl -sS https://api.anthropic.com/v1/models; rc=$?; echo; echo "curl=$rc"'
    )
    r = subprocess.run(
        [sys.executable, "-m", "bot_bottle", "run", "echo-bot", "-p", script],
        env=_bb_env(home, DROPIN_KEY=key), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    # The upstream really was asked, with the real key, and really echoed it ...
    echo = [s for s in world.api.requests[before:] if s.path == "/v1/echo"]
    assert echo and echo[0].headers["authorization"] == f"Bearer {key}"
    # ... but the agent got no part of it: the first curl fails, the second
    # (an ordinary 404 body) comes through.
    assert key not in r.stdout + r.stderr
    assert key[: len(key) // 2] not in r.stdout
    first, second = [ln for ln in r.stdout.splitlines() if ln.startswith("curl=")][:2]
    assert first != "curl=0" and second == "curl=0", r.stdout
