"""A drop-in plugin: copy this folder to ~/.bot-bottle/contrib/internal-hosts/.

Drop-ins need no packaging: bot-bottle imports ``plugin.py`` from every folder
under ``~/.bot-bottle/contrib/`` and registers its hooks like any installed
plugin's (it appears as source "contrib" in ``bot-bottle plugins list``).
Sibling modules import relatively (``from .detector import ...``).
"""

from __future__ import annotations

from bot_bottle import Registration, hookimpl


def _make():
    from .detector import InternalHostnameDetector

    return InternalHostnameDetector()


@hookimpl
def bot_bottle_register_dlp_detectors() -> list[Registration]:
    return [
        Registration(
            "internal_hostnames", _make, "names of hosts on the corp network (*.corp.example)"
        )
    ]
