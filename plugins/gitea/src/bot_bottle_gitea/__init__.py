"""bot-bottle-gitea."""

__version__ = "0.1.0"
