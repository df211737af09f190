"""bot-bottle-gitlab."""

__version__ = "0.1.0"
