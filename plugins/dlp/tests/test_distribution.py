"""The built-in detectors are found through their entry point, like any plugin."""

from __future__ import annotations

from bot_bottle.contracts.dlp import Direction, DlpDetector
from bot_bottle.plugins import PluginHost, Source, Status


def test_builtins_are_discovered_as_an_entry_point_plugin() -> None:
    host = PluginHost(environ={}).load()
    comps = {c.name: c for c in host.components("dlp_detectors")}
    for name in ("token_patterns", "known_secrets", "prompt_injection"):
        assert comps[name].distribution == "bot-bottle-dlp"
    info = host.infos["dlp"]
    assert (info.source, info.status) == (Source.ENTRY_POINT, Status.ACTIVE)


def test_each_detector_builds_and_says_its_direction() -> None:
    host = PluginHost(environ={}).load()
    expected = {
        "token_patterns": Direction.OUTBOUND,
        "known_secrets": Direction.OUTBOUND,
        "prompt_injection": Direction.INBOUND,
    }
    for name, direction in expected.items():
        detector = host.create("dlp_detectors", name)
        assert isinstance(detector, DlpDetector)
        assert (detector.name, detector.direction) == (name, direction)
