"""The Claude Code agent provider for bot-bottle (``agent_provider.template: claude``)."""

__version__ = "0.1.0"
