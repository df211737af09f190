"""The bot-bottle operator console (``bot-bottle supervise``)."""

__version__ = "0.1.0"
