"""A drop-in agent provider: copy this folder to ~/.bot-bottle/contrib/generic-cli/.

bot-bottle imports ``plugin.py`` from every folder under
``~/.bot-bottle/contrib/`` and registers its hooks like an installed
plugin's. This one offers the agent provider ``generic-cli``: any command-line
agent, configured by the bottle (see ``provider.py``), in the image the
``Dockerfile`` next to ``provider.py`` describes. A bottle selects it with
``agent_provider: {template: generic-cli, ...}``.
"""

from __future__ import annotations

from bot_bottle import Registration, hookimpl


def _make():
    # Imported when the provider is used, not when plugins are listed.
    from .provider import GenericCliProvider

    return GenericCliProvider()


@hookimpl
def bot_bottle_register_agent_providers() -> list[Registration]:
    return [Registration("generic-cli", _make, "any command-line agent (drop-in example)")]
