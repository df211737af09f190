"""The Codex CLI agent provider.

With ``forward_host_credentials``, the host's Codex login is read at plan
time: the real access token (ChatGPT login, for ``chatgpt.com``) or API key
(for ``api.openai.com``) goes to egress, and the agent's ``auth.json`` holds
dummies (see :mod:`bot_bottle_codex.auth`). Codex is built on rustls and
ignores both the system store and ``NODE_EXTRA_CA_CERTS``: it trusts extra
roots only through ``CODEX_CA_CERTIFICATE``, so that points at the bottle CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import (
    GUEST_CA_PATH,
    AgentProvider,
    ImageSpec,
    ProviderPlan,
    ProviderRoute,
    ProvisionContext,
)

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import RunningBottle

CHATGPT_HOST = "chatgpt.com"
API_HOST = "api.openai.com"
USER = "agent"
HOME = "/home/agent"
CODEX_HOME = f"{HOME}/.codex"
#: Codex reads global instructions from $CODEX_HOME/AGENTS.md.
PROMPT_PATH = f"{CODEX_HOME}/AGENTS.md"
SKILLS_DIR = f"{CODEX_HOME}/skills"
CONFIG_PATH = f"{CODEX_HOME}/config.toml"
AUTH_PATH = f"{CODEX_HOME}/auth.json"
MCP_NAME = "supervise"


def _host_path(value: str) -> str:
    if not (value.startswith(("/", "~"))):
        raise ValueError("must be an absolute path or start with '~' (a host folder)")
    return value


class CodexOptions(BaseModel):
    """``agent_provider:`` options of ``template: codex``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Read the host's Codex login (``codex login``) at plan time; egress
    #: injects it, the agent gets dummy tokens with the same expiry.
    forward_host_credentials: StrictBool = False
    #: The host's Codex home (default ``$CODEX_HOME`` or ``~/.codex``).
    codex_home: Annotated[str, AfterValidator(_host_path)] | None = None
    #: A Dockerfile (host path) to build instead of the provider's own. It
    #: must install ``codex`` and create the ``agent`` user.
    dockerfile: Path | None = None


@dataclass(frozen=True)
class CodexPlan(ProviderPlan):
    """The plan plus the agent's dummy ``auth.json`` (no secret in it)."""

    agent_auth_json: str | None = None


class CodexProvider(AgentProvider):
    name = "codex"
    description = "OpenAI Codex CLI (npm @openai/codex), host login forwarded through egress"
    options_model: ClassVar[type[BaseModel]] = CodexOptions

    def image(self, options: BaseModel) -> ImageSpec:
        return kit.image_from(self, _opts(options).dockerfile)

    def plan(self, options: BaseModel, *, host_env: Mapping[str, str]) -> CodexPlan:
        from bot_bottle_codex.auth import auth_path, read_host_login

        opts = _opts(options)
        env = {
            **kit.CA_ENV,
            "CODEX_CA_CERTIFICATE": GUEST_CA_PATH,
            "CODEX_HOME": CODEX_HOME,
        }
        # Both API hosts are reachable either way, so a login made inside
        # the bottle works too; with forwarding, the matching one injects.
        routes = {CHATGPT_HOST: ProviderRoute(CHATGPT_HOST), API_HOST: ProviderRoute(API_HOST)}
        agent_auth = None
        if opts.forward_host_credentials:
            login = read_host_login(auth_path(host_env, opts.codex_home))
            host = CHATGPT_HOST if login.mode == "chatgpt" else API_HOST
            routes[host] = ProviderRoute(host, auth_scheme="Bearer", token=login.token)
            agent_auth = login.agent_auth_json
            if login.mode == "apikey":
                env["OPENAI_API_KEY"] = kit.PLACEHOLDER
        return CodexPlan(
            env=env,
            routes=tuple(routes.values()),
            user=USER,
            guest_home=HOME,
            skills_dir=SKILLS_DIR,
            prompt_path=PROMPT_PATH,
            agent_auth_json=agent_auth,
        )

    def provision(self, bottle: RunningBottle, ctx: ProvisionContext) -> None:
        plan = ctx.plan
        kit.prologue(bottle, ctx, skills_dir=SKILLS_DIR, prompt_path=PROMPT_PATH)
        kit.write_file(bottle, plan, CONFIG_PATH, config_toml())
        auth = getattr(plan, "agent_auth_json", None)
        if auth:
            kit.write_file(bottle, plan, AUTH_PATH, auth, mode=0o600)
        if ctx.supervise_url:
            kit.run_as_agent(
                bottle,
                plan,
                ["codex", "mcp", "add", MCP_NAME, "--url", ctx.supervise_url],
                env={"CODEX_HOME": CODEX_HOME},
                what="registering supervise with 'codex mcp add'",
            )

    def interactive_argv(self, ctx: ProvisionContext) -> list[str]:
        return ["codex", "--dangerously-bypass-approvals-and-sandbox"]

    def headless_argv(self, ctx: ProvisionContext, prompt: str) -> list[str]:
        return [
            "codex", "exec", "--dangerously-bypass-approvals-and-sandbox",
            "--skip-git-repo-check", "--", prompt,
        ]  # fmt: skip


def _opts(options: BaseModel) -> CodexOptions:
    if isinstance(options, CodexOptions):
        return options
    return CodexOptions.model_validate(options.model_dump())


def config_toml() -> str:
    """``~/.codex/config.toml`` for the agent. ``codex mcp add`` appends the
    supervise server to it afterwards."""
    lines = [
        "# Written by bot-bottle at provision time.",
        "# The bottle is the sandbox: Codex's own sandbox and approvals are off.",
        'approval_policy = "never"',
        'sandbox_mode = "danger-full-access"',
        "# auth.json (dummy tokens; egress injects the real ones), never a keyring.",
        'cli_auth_credentials_store = "file"',
        "# Updates come from rebuilding the image.",
        "check_for_update_on_startup = false",
        "",
        "[tui]",
        'status_line = ["model-with-reasoning"]',
    ]
    return "\n".join(lines) + "\n"
