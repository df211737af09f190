"""bot-bottle-apple-container."""

__version__ = "0.1.0"
