"""``generic-cli``: run any command-line agent in a bottle.

The bottle says which command to run and, optionally, which API it talks to
and which host variable holds its key::

    agent_provider:
      template: generic-cli
      command: [my-agent, --tui]               # interactive argv
      headless: [my-agent, --print, "{prompt}"]  # "{prompt}" becomes the prompt
      api_host: api.example.com                # egress opens this host...
      api_key: MY_AGENT_KEY                    # ...and injects this host var as Bearer
      key_variable: MY_AGENT_API_KEY           # the agent sees a placeholder here

The agent finds its system prompt in ``$AGENT_PROMPT_FILE`` and its skills
under ``~/.bot-bottle/skills/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bot_bottle import provider_kit as kit
from bot_bottle.contracts.backend import RunningBottle
from bot_bottle.contracts.provider import (
    AgentProvider,
    ImageSpec,
    ProviderPlan,
    ProviderRoute,
    ProvisionContext,
)
from bot_bottle.secrets import Secret

HOME = "/home/agent"
PROMPT_PATH = f"{HOME}/.bot-bottle/prompt.md"
SKILLS_DIR = f"{HOME}/.bot-bottle/skills"
EnvVar = Annotated[str, AfterValidator(kit.env_var_name)]


class GenericCliOptions(BaseModel):
    # Unknown keys are errors ("did you mean ...?" comes from the manifest).
    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(default_factory=lambda: ["bash"], min_length=1)
    headless: list[str] = Field(default_factory=lambda: ["bash", "-c", "{prompt}"], min_length=1)
    api_host: str | None = None
    api_key: EnvVar | None = None
    key_variable: EnvVar = "API_KEY"
    dockerfile: Path | None = None

    @model_validator(mode="after")
    def _key_needs_host(self) -> GenericCliOptions:
        if self.api_key and not self.api_host:
            raise ValueError("api_key needs api_host: the host egress injects the key for")
        return self


@dataclass(frozen=True)
class GenericCliPlan(ProviderPlan):
    """The plan plus the argv templates (the argv methods see only the plan)."""

    command: tuple[str, ...] = ("bash",)
    headless: tuple[str, ...] = ("bash", "-c", "{prompt}")


class GenericCliProvider(AgentProvider):
    name = "generic-cli"
    description = "any command-line agent (drop-in example)"
    options_model: ClassVar[type[BaseModel]] = GenericCliOptions

    def image(self, options: BaseModel) -> ImageSpec:
        opts = GenericCliOptions.model_validate(options.model_dump())
        # Convention: the Dockerfile next to this module.
        return ImageSpec(dockerfile=(opts.dockerfile or kit.dockerfile_beside(self)).expanduser())

    def plan(self, options: BaseModel, *, host_env: Mapping[str, str]) -> GenericCliPlan:
        opts = GenericCliOptions.model_validate(options.model_dump())
        env = {**kit.CA_ENV, "AGENT_PROMPT_FILE": PROMPT_PATH}
        routes: list[ProviderRoute] = []
        if opts.api_host and opts.api_key:
            # Read now, handed to egress only; the agent gets a placeholder.
            token = kit.read_host_token(
                host_env, opts.api_key, option="agent_provider.api_key",
                hint=f"export {opts.api_key}=<your key> before starting the bottle",
            )  # fmt: skip
            routes.append(ProviderRoute(opts.api_host, auth_scheme="Bearer", token=Secret(token)))
            env[opts.key_variable] = kit.PLACEHOLDER
        elif opts.api_host:
            routes.append(ProviderRoute(opts.api_host))
        return GenericCliPlan(
            command=tuple(opts.command),
            headless=tuple(opts.headless),
            env=env,
            routes=tuple(routes),
            user="agent",
            guest_home=HOME,
            skills_dir=SKILLS_DIR,
            prompt_path=PROMPT_PATH,
        )

    def provision(self, bottle: RunningBottle, ctx: ProvisionContext) -> None:
        kit.install_ca(bottle, ctx)
        kit.copy_skills(bottle, ctx.plan, ctx.skills, SKILLS_DIR)
        kit.write_file(bottle, ctx.plan, PROMPT_PATH, ctx.prompt)

    def interactive_argv(self, ctx: ProvisionContext) -> list[str]:
        return list(_plan(ctx).command)

    def headless_argv(self, ctx: ProvisionContext, prompt: str) -> list[str]:
        return [prompt if arg == "{prompt}" else arg for arg in _plan(ctx).headless]


def _plan(ctx: ProvisionContext) -> GenericCliPlan:
    plan = ctx.plan
    return plan if isinstance(plan, GenericCliPlan) else GenericCliPlan(env={})
