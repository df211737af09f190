"""Hook implementation. Import-light: the provider module (pydantic) loads
only when the factory is called."""

from __future__ import annotations

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.provider import AgentProvider


def _make() -> AgentProvider:
    from bot_bottle_codex.provider import CodexProvider

    return CodexProvider()


@hookimpl
def bot_bottle_register_agent_providers() -> list[Registration[AgentProvider]]:
    return [
        Registration(
            "codex", _make, "OpenAI Codex CLI; host login forwarded (forward_host_credentials)"
        )
    ]
