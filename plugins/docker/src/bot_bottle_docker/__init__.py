"""bot-bottle-docker."""

__version__ = "0.1.0"
