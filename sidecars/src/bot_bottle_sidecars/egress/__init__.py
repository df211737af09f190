"""The egress daemon: a mitmproxy addon that enforces the bottle's egress config.

``python -m bot_bottle_sidecars.egress --config PATH --confdir DIR --listen-port N``
"""
