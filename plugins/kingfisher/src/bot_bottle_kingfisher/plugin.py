"""Hook implementation. Import-light: Kingfisher loads (and compiles or
loads its cached rules) only when the detector is built."""

from __future__ import annotations

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.dlp import DlpDetector


def _kingfisher() -> DlpDetector:
    from bot_bottle_kingfisher.detector import KingfisherDetector

    return KingfisherDetector()


@hookimpl
def bot_bottle_register_dlp_detectors() -> list[Registration[DlpDetector]]:
    return [
        Registration(
            "kingfisher",
            _kingfisher,
            "Kingfisher's bundled secret rules (kingfisher-secret-scanner, in-process)",
        )
    ]
