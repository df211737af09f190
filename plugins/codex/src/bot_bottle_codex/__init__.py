"""The OpenAI Codex CLI agent provider for bot-bottle (``agent_provider.template: codex``)."""

__version__ = "0.1.0"
