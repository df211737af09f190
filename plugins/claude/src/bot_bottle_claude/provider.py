"""The Claude Code agent provider.

Credentials: with ``auth_token`` (the name of a host variable holding a
long-lived OAuth token from ``claude setup-token``), egress owns
``api.anthropic.com`` and injects ``Authorization: Bearer <token>``; the
agent's ``CLAUDE_CODE_OAUTH_TOKEN`` is a placeholder, so Claude Code starts
signed in and sends requests egress rewrites. Without it, the route is
there without auth (an ``ANTHROPIC_API_KEY`` given through the bottle's env
travels in ``x-api-key``, which egress leaves alone).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.provider import (
    AgentProvider,
    ImageSpec,
    ProviderPlan,
    ProviderRoute,
    ProvisionContext,
)
from bot_bottle.secrets import Secret

if TYPE_CHECKING:
    from bot_bottle.contracts.backend import RunningBottle

API_HOST = "api.anthropic.com"
USER = "agent"
HOME = "/home/agent"
SKILLS_DIR = f"{HOME}/.claude/skills"
PROMPT_PATH = f"{HOME}/.bot-bottle/prompt.md"
STATUSLINE_PATH = f"{HOME}/.claude/bot-bottle-statusline.sh"
SETTINGS_PATH = f"{HOME}/.claude/settings.json"
STATE_PATH = f"{HOME}/.claude.json"
MCP_NAME = "supervise"


class ClaudeOptions(BaseModel):
    """``agent_provider:`` options of ``template: claude``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Name of the host environment variable holding the long-lived OAuth
    #: token (``claude setup-token``). The value is read at plan time and
    #: reaches the egress daemon only.
    auth_token: Annotated[str, AfterValidator(kit.env_var_name)] | None = None
    #: A Dockerfile (host path) to build instead of the provider's own. It
    #: must install ``claude`` and create the ``agent`` user.
    dockerfile: Path | None = None


class ClaudeProvider(AgentProvider):
    name = "claude"
    description = "Claude Code (npm @anthropic-ai/claude-code), OAuth token injected by egress"
    options_model: ClassVar[type[BaseModel]] = ClaudeOptions

    def image(self, options: BaseModel) -> ImageSpec:
        return kit.image_from(self, _opts(options).dockerfile)

    def plan(self, options: BaseModel, *, host_env: Mapping[str, str]) -> ProviderPlan:
        opts = _opts(options)
        env = {
            **kit.CA_ENV,
            # Telemetry, error reporting and the auto-updater would only hit
            # egress's deny-by-default and retry.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        if opts.auth_token is None:
            route = ProviderRoute(API_HOST)
        else:
            token = kit.read_host_token(
                host_env,
                opts.auth_token,
                option="agent_provider.auth_token",
                hint=f"run 'claude setup-token' on the host, then "
                f"'export {opts.auth_token}=<the token>' before starting the bottle",
            )
            route = ProviderRoute(API_HOST, auth_scheme="Bearer", token=Secret(token))
            env["CLAUDE_CODE_OAUTH_TOKEN"] = kit.PLACEHOLDER
        return ProviderPlan(
            env=env,
            routes=(route,),
            user=USER,
            guest_home=HOME,
            skills_dir=SKILLS_DIR,
            prompt_path=PROMPT_PATH,
        )

    def host_skills_dir(self, host_env: Mapping[str, str]) -> Path:
        # Claude Code's own skills folder: the skills it runs on the host.
        return Path(host_env.get("HOME") or "~").expanduser() / ".claude" / "skills"

    def provision(self, bottle: RunningBottle, ctx: ProvisionContext) -> None:
        plan = ctx.plan
        kit.prologue(bottle, ctx, skills_dir=SKILLS_DIR, prompt_path=PROMPT_PATH)
        label = kit.printable(ctx.label or "bot-bottle")
        colour = colour_for(ctx.label)
        kit.write_file(bottle, plan, STATUSLINE_PATH, statusline_script(label, colour), mode=0o755)
        kit.write_file(bottle, plan, SETTINGS_PATH, json.dumps(settings(), indent=2) + "\n")
        # Written before `claude mcp add`, which merges its entry into it.
        trusted = [plan.guest_home, *(d for d in (ctx.workdir,) if d)]
        kit.write_file(
            bottle, plan, STATE_PATH, json.dumps(state(trusted), indent=2) + "\n", mode=0o600
        )
        if ctx.supervise_url:
            # `claude mcp add` owns the format of ~/.claude.json (it changed
            # between versions; settings.json mcpServers is not read). As the
            # agent user with its HOME, or it writes root's file.
            argv = ["claude", "mcp", "add", "--scope", "user", "--transport", "http"]
            kit.run_as_agent(
                bottle,
                plan,
                [*argv, MCP_NAME, ctx.supervise_url],
                what="registering supervise with 'claude mcp add'",
            )

    def interactive_argv(self, ctx: ProvisionContext) -> list[str]:
        return ["claude", *self._common_args(ctx)]

    def headless_argv(self, ctx: ProvisionContext, prompt: str) -> list[str]:
        # The prompt after "--": a prompt starting with "-" is not an option.
        return ["claude", "-p", *self._common_args(ctx), "--", prompt]

    def _common_args(self, ctx: ProvisionContext) -> list[str]:
        # The bottle is the sandbox: inside it the agent needs no prompts.
        args = ["--dangerously-skip-permissions"]
        if ctx.prompt.strip():
            args += ["--append-system-prompt-file", ctx.plan.prompt_path or PROMPT_PATH]
        return args


def _opts(options: BaseModel) -> ClaudeOptions:
    if isinstance(options, ClaudeOptions):
        return options
    return ClaudeOptions.model_validate(options.model_dump())


def settings() -> dict[str, object]:
    """``~/.claude/settings.json``: the status line shows the bottle's label."""
    return {
        "statusLine": {"type": "command", "command": STATUSLINE_PATH, "padding": 0},
        "theme": "dark",
    }


def state(trusted: Sequence[str] = ()) -> dict[str, object]:
    """``~/.claude.json`` before first start: no onboarding, no update checks,
    and the folders the agent works in already trusted (the trust dialog
    defaults to "No, exit")."""
    return {
        "hasCompletedOnboarding": True,
        "bypassPermissionsModeAccepted": True,
        "autoUpdates": False,
        "projects": {
            folder: {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}
            for folder in trusted
        },
    }


#: Named colours (Claude Code's sub-agent palette) as 256-colour indices.
COLOURS: Mapping[str, int] = {
    "red": 196,
    "orange": 208,
    "yellow": 220,
    "green": 40,
    "cyan": 44,
    "blue": 33,
    "purple": 135,
    "pink": 205,
}


def colour_for(label: str | None, colour: str | None = None) -> str:
    """``colour`` when it is a known name, else one derived from the label,
    so one bottle keeps its colour from launch to launch."""
    if colour and colour.lower() in COLOURS:
        return colour.lower()
    names = sorted(COLOURS)
    digest = hashlib.sha256((label or "").encode()).digest()
    return names[digest[0] % len(names)]


def statusline_script(label: str, colour: str) -> str:
    """The status-line command: the label as a coloured badge.

    Claude Code pipes a JSON status object on stdin; the script ignores it.
    The label is quoted (it comes from the operator, but a generated script
    quotes every value).
    """
    code = COLOURS[colour]
    return (
        "#!/bin/sh\n"
        "# Written by bot-bottle: the bottle's label in Claude Code's status line.\n"
        "cat >/dev/null\n"
        f"printf '\\033[1;38;5;%sm\\342\\227\\217 %s\\033[0m' {code} {shlex.quote(label)}\n"
    )
