"""Test kit for plugin authors (a pytest plugin, loaded automatically).

Fixtures:

* ``bot_bottle_host``: a fresh :class:`~bot_bottle.plugins.PluginHost` that
  loads no installed plugins and no contrib directory; register what the test
  needs with ``bot_bottle_host.register(obj, "name")``.
* ``bot_bottle_home``: a temporary ``BOT_BOTTLE_HOME`` (with ``contrib/``),
  set in the environment for the test.

Helper: :func:`make_dist_info` writes a fake ``.dist-info`` with entry points
into a directory, for discovery tests that put it on ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from bot_bottle.plugins import PluginHost


@pytest.fixture
def bot_bottle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "bot-bottle-home"
    (home / "contrib").mkdir(parents=True)
    monkeypatch.setenv("BOT_BOTTLE_HOME", str(home))
    yield home


@pytest.fixture
def bot_bottle_host(tmp_path: Path) -> PluginHost:
    return PluginHost(environ={}, contrib=tmp_path / "no-contrib", load_entry_points=False).load()


def make_dist_info(site: Path, name: str, version: str, entry_points: Mapping[str, str]) -> Path:
    """Write ``<site>/<name>-<version>.dist-info`` declaring ``entry_points``
    (plugin name -> ``module:attr``) in group ``bot_bottle``."""
    norm = name.replace("-", "_")
    dist = site / f"{norm}-{version}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[bot_bottle]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dist
