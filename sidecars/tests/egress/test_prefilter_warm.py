"""The egress daemon compiles the token rules' prefilter when it loads them.

The token rules' Hyperscan database takes ~0.4 s to compile and is compiled
lazily (after 2 MiB scanned) elsewhere; a long-running egress compiles it in
the background at start instead of stalling a request later.
"""

from __future__ import annotations

import time

import pytest
from bot_bottle_sidecars.egress.daemon import plugin_scanner_factory
from bot_bottle_sidecars.egress.dlp import DetectorScanner

from bot_bottle.dlp import prefilter
from bot_bottle.egress.config import EgressConfig


def test_loading_the_detectors_compiles_the_token_prefilter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not prefilter.available():
        pytest.skip("needs hyperscan (x86_64)")
    monkeypatch.setattr(prefilter, "lazy", True)
    config = EgressConfig.model_validate(
        {
            "routes": [
                {"host": "api.example.test", "dlp": {"outbound_detectors": ["token_patterns"]}}
            ]
        }
    )
    scanner = plugin_scanner_factory()(config, ())
    assert isinstance(scanner, DetectorScanner)
    detector = scanner._detector("token_patterns")  # pyright: ignore[reportPrivateUsage]
    gate = detector._prefilter  # pyright: ignore[reportAttributeAccessIssue]
    deadline = time.monotonic() + 60
    while gate._mine is None and time.monotonic() < deadline:  # pyright: ignore[reportPrivateUsage]
        time.sleep(0.05)
    # Compiled with nothing scanned yet: a small body is answered at once.
    assert gate.matching(b"nothing here") == frozenset()
