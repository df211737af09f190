"""The sidecars distribution is installed in the workspace with its daemons' dependencies."""

from importlib.metadata import requires, version

import bot_bottle_sidecars


def test_sidecars_version_matches_metadata() -> None:
    assert version("bot-bottle-sidecars") == bot_bottle_sidecars.__version__


def test_sidecars_depend_on_core_and_mitmproxy() -> None:
    deps = " ".join(requires("bot-bottle-sidecars") or [])
    assert "bot-bottle" in deps and "mitmproxy" in deps
