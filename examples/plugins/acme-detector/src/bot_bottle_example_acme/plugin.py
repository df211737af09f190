"""Hook implementations. Kept import-light: the detector loads on first use."""

from __future__ import annotations

from bot_bottle import Registration, hookimpl


def _make_detector():
    from bot_bottle_example_acme.detector import AcmeTokenDetector

    return AcmeTokenDetector()


@hookimpl
def bot_bottle_register_dlp_detectors() -> list[Registration]:
    return [Registration("acme_tokens", _make_detector, "ACME Corp API tokens (acme_...)")]
