"""The Claude Code and Codex agent images, built for real, and provisioning
run for real in containers from them.

The images are content-tagged and kept between runs (rebuilding ~3 minutes
each is what the tag saves); the containers are labelled and removed by
their context managers. Provisioning runs against
:class:`tests.provider_bottle.ContainerBottle` (a plain container, no
network, or an internal network the test creates). ``claude -p`` runs
against a local server playing the Anthropic API, directly and through the
real egress daemon (which injects the real token). The same checks in a
bottle started by the Docker backend (sidecar bundle, its networks) belong
with that backend.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from bot_bottle_sidecars.launch.ca import BottleCA, generate_bottle_ca

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import GUEST_CA_PATH, ProviderPlan, ProvisionContext
from bot_bottle.imagebuild import ImageResult
from bot_bottle_claude.provider import ClaudeOptions, ClaudeProvider
from bot_bottle_codex.auth import jwt_claims
from bot_bottle_codex.provider import CodexOptions, CodexProvider
from bot_bottle_docker.images import ensure_agent_image
from tests.fake_anthropic import FakeAnthropic, fake_anthropic
from tests.provider_bottle import (
    ContainerBottle,
    container_bottle,
    internal_network,
    screen_text,
)

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.docker

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
REAL_TOKEN = "sk-ant-oat01-REAL-test-token-never-in-the-agent"
SUPERVISE_URL = "http://supervise.test:8765/mcp"
GUEST_CA_SRC = "/tmp/bottle-ca.crt"


def make_jwt(claims: dict[str, object]) -> str:
    """A JWT shaped like the real thing, with a fake HS256 signature."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.{b64(b'REAL-signature-bytes-0123')}"


def _extra_ca() -> Path | None:
    return HOST_CA if HOST_CA.exists() else None


@pytest.fixture(scope="session")
def claude_image(docker_client: docker.DockerClient, base_image: str) -> ImageResult:
    spec = ClaudeProvider().image(ClaudeOptions())
    return ensure_agent_image(
        kit.agent_image_spec("claude", spec, base_image=base_image, extra_ca=_extra_ca())
    )


@pytest.fixture(scope="session")
def codex_image(docker_client: docker.DockerClient, base_image: str) -> ImageResult:
    spec = CodexProvider().image(CodexOptions())
    return ensure_agent_image(
        kit.agent_image_spec("codex", spec, base_image=base_image, extra_ca=_extra_ca())
    )


def _run(docker_client: docker.DockerClient, image: str, *argv: str) -> str:
    out = docker_client.containers.run(
        image, list(argv), remove=True, network_disabled=True, labels={"org.bot-bottle.test": "1"}
    )
    return out.decode() if isinstance(out, bytes) else str(out)


def test_claude_version_runs_as_the_agent_user(
    docker_client: docker.DockerClient, claude_image: ImageResult
) -> None:
    assert "(Claude Code)" in _run(docker_client, claude_image.tag, "claude", "--version")
    assert _run(docker_client, claude_image.tag, "id", "-un").strip() == "agent"


def test_codex_version_runs_as_the_agent_user(
    docker_client: docker.DockerClient, codex_image: ImageResult
) -> None:
    assert _run(docker_client, codex_image.tag, "codex", "--version").startswith("codex-cli ")
    assert _run(docker_client, codex_image.tag, "id", "-un").strip() == "agent"


def test_an_unchanged_agent_image_is_reused(claude_image: ImageResult, base_image: str) -> None:
    spec = ClaudeProvider().image(ClaudeOptions())
    again = ensure_agent_image(
        kit.agent_image_spec("claude", spec, base_image=base_image, extra_ca=_extra_ca())
    )
    assert (again.tag, again.built) == (claude_image.tag, False)


def _ctx(plan: ProviderPlan, skills: list[Path], label: str = "review bot") -> ProvisionContext:
    return ProvisionContext(
        plan=plan,
        ca_cert_path=GUEST_CA_SRC,
        supervise_url=SUPERVISE_URL,
        skills=skills,
        prompt="You are the test agent. Say hello.",
        label=label,
    )


def _put_ca(bottle: ContainerBottle, tmp_path: Path) -> bytes:
    """What the backend does before provisioning: the CA file in the guest."""
    ca = generate_bottle_ca(tmp_path / "ca")
    bottle.copy_in(ca.agent_cert, GUEST_CA_SRC, mode=0o644)
    return ca.agent_cert.read_bytes()


def _skill(tmp_path: Path) -> Path:
    skill = tmp_path / "skills" / "greet"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("---\nname: greet\n---\nSay hello.\n")
    return skill


def _as_agent(bottle: ContainerBottle, plan: ProviderPlan, *argv: str) -> str:
    result = bottle.exec(kit.agent_argv(plan, argv), user="root")
    text = (result.stdout + result.stderr).decode()
    assert result.ok, text
    return text


def _nowhere(bottle: ContainerBottle, secret: str, plan: ProviderPlan) -> None:
    """The secret is in no file of the agent's home, /tmp or /etc, and in no
    process's environment (the needle goes in on stdin, not argv or env)."""
    found = bottle.exec(["grep", "-rlsF", "-f", "-", plan.guest_home, "/tmp", "/etc"],
                        user="root", stdin=secret.encode())  # fmt: skip
    assert found.stdout.decode().split() == []
    # As the agent: root without CAP_SYS_PTRACE cannot read another uid's environ.
    environs = bottle.exec(
        ["sh", "-c", "for f in /proc/[0-9]*/environ; do cat $f; echo; done"], user=plan.user
    )
    assert environs.ok and b"HOME=" in environs.stdout
    assert secret.encode() not in environs.stdout


def test_claude_provisioning_registers_supervise_and_hides_the_token(
    claude_image: ImageResult, tmp_path: Path
) -> None:
    provider = ClaudeProvider()
    options = ClaudeOptions(auth_token="CLAUDE_TOK")
    plan = provider.plan(options, host_env={"CLAUDE_TOK": REAL_TOKEN})
    with container_bottle(claude_image.tag, plan) as bottle:
        ca_pem = _put_ca(bottle, tmp_path)
        ctx = _ctx(plan, [_skill(tmp_path)])
        provider.provision(bottle, ctx)

        listing = _as_agent(bottle, plan, "claude", "mcp", "list")
        assert "supervise" in listing and SUPERVISE_URL in listing
        assert "SKILL.md" in _as_agent(bottle, plan, "ls", f"{plan.skills_dir}/greet")
        owner = _as_agent(bottle, plan, "stat", "-c", "%U", f"{plan.skills_dir}/greet/SKILL.md")
        assert owner.strip() == "agent"
        assert "Say hello." in _as_agent(bottle, plan, "cat", plan.prompt_path or "")
        status = _as_agent(bottle, plan, "sh", "-c", f"echo '{{}}' | {ctx.plan.guest_home}"
                           "/.claude/bot-bottle-statusline.sh")  # fmt: skip
        assert "review bot" in status and "\x1b[1;38;5;" in status
        # The CA went into the system bundle the clients read.
        bundle = _as_agent(bottle, plan, "cat", kit.GUEST_CA_BUNDLE)
        assert ca_pem.decode().strip().splitlines()[1] in bundle

        env = _as_agent(bottle, plan, "env")
        assert f"CLAUDE_CODE_OAUTH_TOKEN={kit.PLACEHOLDER}" in env
        assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1" in env
        _nowhere(bottle, REAL_TOKEN, plan)

        argv = provider.headless_argv(ctx, "hi")
        assert argv[:2] == ["claude", "-p"]
        assert argv[argv.index("--append-system-prompt-file") + 1] == plan.prompt_path


@dataclass(frozen=True)
class _CtxWithWorkdir(ProvisionContext):
    """A ProvisionContext as a core that passes the agent's working directory
    builds it (the provider reads it with getattr)."""

    workdir: str | None = None


def test_claude_starts_interactively_without_dialogs_showing_the_label(
    claude_image: ImageResult, tmp_path: Path
) -> None:
    provider = ClaudeProvider()
    options = ClaudeOptions(auth_token="CLAUDE_TOK")
    plan = provider.plan(options, host_env={"CLAUDE_TOK": REAL_TOKEN})
    workdir = f"{plan.guest_home}/project"
    with container_bottle(claude_image.tag, plan) as bottle:
        _put_ca(bottle, tmp_path)
        ctx = _CtxWithWorkdir(**{**vars(_ctx(plan, [], label="night shift")), "workdir": workdir})
        provider.provision(bottle, ctx)
        _as_agent(bottle, plan, "mkdir", "-p", workdir)
        argv = kit.agent_argv(plan, provider.interactive_argv(ctx))
        screen = screen_text(
            bottle.container, argv, until=["night shift", "bypass permissions"], workdir=workdir
        )
    # No onboarding, no trust dialog (it defaults to "No, exit"): the prompt,
    # with the label in the status line.
    assert "night shift" in screen and "bypass permissions" in screen, screen[-2000:]
    assert "trust this folder" not in screen


def test_codex_provisioning_forwards_a_dummy_login_with_the_real_expiry(
    codex_image: ImageResult, tmp_path: Path
) -> None:
    exp = int(time.time()) + 5 * 86400
    access = make_jwt({"exp": exp, "https://api.openai.com/auth": {"chatgpt_account_id": "acc-1"}})
    auth_claims = {"chatgpt_plan_type": "plus", "chatgpt_account_id": "acc-1"}
    id_token = make_jwt(
        {"exp": exp, "email": "dev@example.test", "https://api.openai.com/auth": auth_claims}
    )
    codex_home = tmp_path / "host-home" / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "auth.json").write_text(json.dumps({
        "OPENAI_API_KEY": None,
        "tokens": {"id_token": id_token, "access_token": access,
                   "refresh_token": "rt-REAL-refresh", "account_id": "acc-1"},
        "last_refresh": "2026-11-20T10:00:00Z",
    }))  # fmt: skip
    provider = CodexProvider()
    plan = provider.plan(
        CodexOptions(forward_host_credentials=True),
        host_env={"HOME": str(tmp_path / "host-home")},
    )
    with container_bottle(codex_image.tag, plan) as bottle:
        _put_ca(bottle, tmp_path)
        ctx = _ctx(plan, [_skill(tmp_path)])
        provider.provision(bottle, ctx)

        # Codex accepts the dummy login as a ChatGPT sign-in...
        assert "Logged in using ChatGPT" in _as_agent(bottle, plan, "codex", "login", "status")
        # ...whose access token expires when the real one does.
        auth = json.loads(_as_agent(bottle, plan, "cat", f"{plan.guest_home}/.codex/auth.json"))
        assert jwt_claims(auth["tokens"]["access_token"], what="dummy")["exp"] == exp
        listing = _as_agent(bottle, plan, "codex", "mcp", "list")
        assert "supervise" in listing and SUPERVISE_URL in listing
        env = _as_agent(bottle, plan, "env")
        assert f"CODEX_CA_CERTIFICATE={GUEST_CA_PATH}" in env
        assert "BEGIN CERTIFICATE" in _as_agent(bottle, plan, "cat", GUEST_CA_PATH)
        assert "Say hello." in _as_agent(bottle, plan, "cat", plan.prompt_path or "")
        mode = _as_agent(bottle, plan, "stat", "-c", "%a", f"{plan.guest_home}/.codex/auth.json")
        assert mode.strip() == "600"
        for secret in (access, id_token, "rt-REAL-refresh", access.split(".")[2]):
            _nowhere(bottle, secret, plan)
        # Started for a person: signed in (no sign-in screen), at the prompt.
        argv = kit.agent_argv(plan, provider.interactive_argv(ctx))
        screen = screen_text(bottle.container, argv, until=["Ask Codex to do anything"])
    assert "Ask Codex to do anything" in screen, screen[-2000:]
    assert "Sign in with ChatGPT" not in screen


def test_claude_headless_reaches_the_api_with_only_the_placeholder(
    claude_image: ImageResult, tmp_path: Path
) -> None:
    """``claude -p`` as provisioned, against a local HTTPS server playing the
    Anthropic API (on an internal network the test creates, its certificate
    from a CA provisioning installed as the bottle CA): the answer comes back
    and the request carried ``Authorization: Bearer <placeholder>`` -- the
    header egress replaces with the real token. Egress itself is not in this
    path (that end-to-end test needs the Docker backend)."""
    provider = ClaudeProvider()
    options = ClaudeOptions(auth_token="CLAUDE_TOK")
    plan = provider.plan(options, host_env={"CLAUDE_TOK": REAL_TOKEN})
    host = "api.anthropic.test"
    reply = "hello from the fake API"
    with (
        internal_network() as (network, gateway),
        fake_anthropic(tmp_path, hosts=[host], reply=reply, bind=gateway) as api,
        container_bottle(
            claude_image.tag, plan, network=network, extra_hosts={host: gateway}
        ) as bottle,
    ):
        bottle.copy_in(api.ca_pem, GUEST_CA_SRC, mode=0o644)
        ctx = _ctx(plan, [])
        provider.provision(bottle, ctx)
        argv = provider.headless_argv(ctx, "say hello")
        env = {"ANTHROPIC_BASE_URL": f"https://{host}:{api.port}"}
        result = bottle.exec(kit.agent_argv(plan, argv, env), user="root")
        assert result.ok, result.stderr.decode()[-2000:]
        assert reply in result.stdout.decode()
        _nowhere(bottle, REAL_TOKEN, plan)
    (call, *_) = api.messages()
    assert call.headers["authorization"] == f"Bearer {kit.PLACEHOLDER}"
    assert "oauth" in call.headers.get("anthropic-beta", "")
    # The agent's system prompt file reached the model.
    assert b"You are the test agent." in call.body
    assert all(REAL_TOKEN not in json.dumps(r.headers) for r in api.requests)


@contextmanager
def _egress(config: Path, confdir: Path, host: str, env: dict[str, str]) -> Iterator[str]:
    """The real egress daemon on the host side of the test's internal network
    (what the sidecar bundle runs); yields its proxy URL."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("EGRESS_", "BOT_BOTTLE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot_bottle_sidecars.egress", "--config", str(config),
         "--confdir", str(confdir), "--listen-host", host, "--listen-port", str(port)],
        env={**keep, "BOT_BOTTLE_HOME": str(confdir.parent / "home"), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((host, port)) == 0:
                    break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
        yield f"http://{host}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def _behind_egress(
    plan: ProviderPlan,
    provider_name: str,
    host: str,
    api: FakeAnthropic,
    ca: BottleCA,
    gateway: str,
) -> Iterator[ProviderPlan]:
    """:func:`_egress` (its config beside ``ca``'s confdir) serving
    ``plan``'s routes, ``host`` pinned to ``api`` at ``gateway``; yields
    ``plan`` with the proxy in its env."""
    from bot_bottle.egress.render import render_egress_config

    config, tokens = render_egress_config(
        (),
        plan.routes,
        provider_name=provider_name,
        upstream_ca=str(api.ca_pem),
        extra_hosts={host: gateway},
    )
    config_path = ca.confdir.parent / "config.json"
    config.write(config_path)
    slots = {k: v.reveal() for k, v in tokens.items()}
    with _egress(config_path, ca.confdir, gateway, slots) as proxy:
        proxy_env = {k: proxy for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY")}
        yield dataclasses.replace(plan, env={**plan.env, **proxy_env})


def test_claude_headless_through_egress_gets_the_real_token_injected(
    claude_image: ImageResult, tmp_path: Path
) -> None:
    """End to end without the Docker backend's plumbing: the agent container
    on an internal network, its proxy the real egress daemon, the provider's
    own route for api.anthropic.com pinned (extra_hosts + upstream_ca) to a
    local server playing the Anthropic API. The server receives the real
    Bearer token; the agent only ever held the placeholder."""
    provider = ClaudeProvider()
    options = ClaudeOptions(auth_token="CLAUDE_TOK")
    plan = provider.plan(options, host_env={"CLAUDE_TOK": REAL_TOKEN})
    ca = generate_bottle_ca(tmp_path / "egress" / "confdir")
    reply = "hello through egress"
    with (
        internal_network() as (network, gateway),
        fake_anthropic(
            tmp_path, hosts=["api.anthropic.com"], reply=reply, bind=gateway, port=443
        ) as api,
        _behind_egress(plan, "claude", "api.anthropic.com", api, ca, gateway) as bottle_plan,
        container_bottle(claude_image.tag, bottle_plan, network=network) as bottle,
    ):
        bottle.copy_in(ca.agent_cert, GUEST_CA_SRC, mode=0o644)
        ctx = _ctx(bottle_plan, [])
        provider.provision(bottle, ctx)
        argv = provider.headless_argv(ctx, "say hello")
        result = bottle.exec(kit.agent_argv(bottle_plan, argv), user="root")
        assert result.ok, result.stderr.decode()[-2000:]
        assert reply in result.stdout.decode()
        _nowhere(bottle, REAL_TOKEN, bottle_plan)
    (call, *_) = api.messages()
    assert call.headers["authorization"] == f"Bearer {REAL_TOKEN}"
    assert REAL_TOKEN not in json.dumps(dict(plan.env))


def test_codex_through_egress_sends_the_real_token_and_trusts_the_bottle_ca(
    codex_image: ImageResult, tmp_path: Path
) -> None:
    """``codex exec`` with the forwarded login, through the real egress daemon
    to a local server standing in for chatgpt.com: the TLS handshake with
    egress succeeds only because CODEX_CA_CERTIFICATE points at the bottle CA
    (rustls ignores the system store), and the server receives the host's
    real access token, never the dummy. The server answers 404, so Codex
    fails after that request; the request is what is checked."""
    exp = int(time.time()) + 5 * 86400
    access = make_jwt({"exp": exp, "https://api.openai.com/auth": {"chatgpt_account_id": "a-1"}})
    codex_home = tmp_path / "host-home" / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "auth.json").write_text(
        json.dumps({"tokens": {"access_token": access, "id_token": make_jwt({"exp": exp}),
                               "refresh_token": "rt-REAL", "account_id": "a-1"}})
    )  # fmt: skip
    provider = CodexProvider()
    plan = provider.plan(
        CodexOptions(forward_host_credentials=True), host_env={"HOME": str(codex_home.parent)}
    )
    ca = generate_bottle_ca(tmp_path / "egress" / "confdir")
    with (
        internal_network() as (network, gateway),
        fake_anthropic(tmp_path, hosts=["chatgpt.com"], reply="-", bind=gateway, port=443) as api,
        _behind_egress(plan, "codex", "chatgpt.com", api, ca, gateway) as bottle_plan,
        container_bottle(codex_image.tag, bottle_plan, network=network) as bottle,
    ):
        bottle.copy_in(ca.agent_cert, GUEST_CA_SRC, mode=0o644)
        ctx = _ctx(bottle_plan, [])
        provider.provision(bottle, ctx)
        argv = ["timeout", "60", *provider.headless_argv(ctx, "say hello")]
        bottle.exec(kit.agent_argv(bottle_plan, argv), user="root")
        _nowhere(bottle, access, bottle_plan)
    calls = [r for r in api.requests if r.method == "POST"]
    assert calls, "codex never reached the upstream through egress"
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {access}"}
    assert calls[0].headers.get("chatgpt-account-id") == "a-1"
