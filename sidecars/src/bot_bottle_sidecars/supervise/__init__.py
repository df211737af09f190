"""supervise: the MCP server an agent calls when it is blocked (DESIGN §4).

Run as ``python -m bot_bottle_sidecars.supervise --queue-dir DIR --bottle-slug SLUG``.
"""

from bot_bottle_sidecars.supervise.server import SuperviseConfig, build_app, build_server

__all__ = ["SuperviseConfig", "build_app", "build_server"]
