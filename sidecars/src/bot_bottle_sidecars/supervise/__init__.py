"""supervise: the MCP server an agent calls when it is blocked: it reads the
live egress routes and files proposals (a route, a capability) that the
operator approves or refuses outside the bottle.

Run as ``python -m bot_bottle_sidecars.supervise --queue-dir DIR --bottle-slug SLUG``.
"""

from bot_bottle_sidecars.supervise.server import SuperviseConfig, build_app, build_server

__all__ = ["SuperviseConfig", "build_app", "build_server"]
