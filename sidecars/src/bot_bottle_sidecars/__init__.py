"""bot-bottle sidecar daemons (egress, git-gate, supervise, init)."""

__version__ = "0.1.0"
