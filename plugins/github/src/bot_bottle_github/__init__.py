"""bot-bottle-github."""

__version__ = "0.1.0"
