"""Hook implementation. Import-light: the provider module (pydantic) loads
only when the factory is called."""

from __future__ import annotations

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.provider import AgentProvider


def _make() -> AgentProvider:
    from bot_bottle_claude.provider import ClaudeProvider

    return ClaudeProvider()


@hookimpl
def bot_bottle_register_agent_providers() -> list[Registration[AgentProvider]]:
    return [
        Registration("claude", _make, "Claude Code; OAuth token injected by egress (auth_token)")
    ]
