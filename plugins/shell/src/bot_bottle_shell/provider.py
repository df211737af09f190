"""The ``shell`` provider: no API, no credential, no routes of its own.

It exists so a newcomer can start a bottle with no tokens and watch what the
sidecar allows and refuses (``bot-bottle run demo -- curl ...``), and so the
sandbox-escape suite has an agent with curl, git and DNS tools to attack from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.backend import RunningBottle
from bot_bottle.contracts.provider import (
    AgentProvider,
    ImageSpec,
    ProviderPlan,
    ProvisionContext,
)

HOME = "/home/agent"
SKILLS_DIR = f"{HOME}/.bot-bottle/skills"
PROMPT_PATH = f"{HOME}/.bot-bottle/prompt.md"


class ShellOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The shell an interactive session starts.
    shell: str = "/bin/bash"


class ShellProvider(AgentProvider):
    name = "shell"
    description = "a shell with curl, git and DNS tools; no credentials"
    options_model = ShellOptions

    def image(self, options: BaseModel) -> ImageSpec:
        return ImageSpec(dockerfile=Path(__file__).with_name("Dockerfile"))

    def plan(self, options: BaseModel, *, host_env: Mapping[str, str]) -> ProviderPlan:
        return ProviderPlan(
            env={},
            user="agent",
            guest_home=HOME,
            skills_dir=SKILLS_DIR,
            prompt_path=PROMPT_PATH,
        )

    def provision(self, bottle: RunningBottle, ctx: ProvisionContext) -> None:
        plan = ctx.plan
        kit.prologue(bottle, ctx, skills_dir=SKILLS_DIR, prompt_path=PROMPT_PATH)
        if ctx.supervise_url:
            # No MCP client in this image: leave the URL where a person finds it.
            kit.write_file(bottle, plan, f"{HOME}/.bot-bottle/supervise", f"{ctx.supervise_url}\n")

    def interactive_argv(self, ctx: ProvisionContext) -> list[str]:
        options = ctx.options if isinstance(ctx.options, ShellOptions) else ShellOptions()
        return [options.shell, "-l"]

    def headless_argv(self, ctx: ProvisionContext, prompt: str) -> list[str]:
        # The "prompt" of a shell agent is a command line.
        return ["bash", "-lc", prompt] if prompt else ["bash", "-lc", "true"]


__all__ = ["ShellOptions", "ShellProvider"]
