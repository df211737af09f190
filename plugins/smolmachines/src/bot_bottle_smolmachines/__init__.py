"""bot-bottle smolmachines backend: the agent in a libkrun micro-VM (smolvm CLI)."""

__version__ = "0.1.0"
