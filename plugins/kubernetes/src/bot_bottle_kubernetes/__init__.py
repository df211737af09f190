"""bot-bottle Kubernetes backend: two pods per bottle, fenced by NetworkPolicy."""

__version__ = "0.1.0"
