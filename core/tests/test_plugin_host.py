"""The plugin host: discovery, tolerance of broken plugins, selection, conflicts."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot_bottle import Registration, hookimpl
from bot_bottle.errors import PluginConflictError, PluginError, UnknownPluginError
from bot_bottle.plugins import PluginHost, Source, Status
from bot_bottle.testing import make_dist_info

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _Thing:
    def __init__(self, name: str) -> None:
        self.name = name


def _plugin(family_hook: str, *names: str) -> object:
    class P:
        pass

    def impl() -> list[Registration[_Thing]]:
        return [Registration(n, lambda n=n: _Thing(n), f"the {n}") for n in names]

    impl.__name__ = family_hook
    setattr(P, family_hook, staticmethod(hookimpl(impl)))
    return P()


def test_registered_components_are_sorted_by_name(bot_bottle_host: PluginHost) -> None:
    bot_bottle_host.register(_plugin("bot_bottle_register_backends", "zeta", "alpha"), "p1")
    names = [c.name for c in bot_bottle_host.components("backends")]
    assert names == ["alpha", "zeta"]
    assert bot_bottle_host.create("backends", "zeta").name == "zeta"
    info = bot_bottle_host.infos["p1"]
    assert info.hooks == ["register_backends"]
    assert info.components == {"backends": ["zeta", "alpha"]}


def test_a_hook_that_raises_fails_only_its_plugin(bot_bottle_host: PluginHost) -> None:
    class Bad:
        @hookimpl
        def bot_bottle_register_backends(self) -> list[Registration[_Thing]]:
            raise RuntimeError("no luck")

    bot_bottle_host.register(Bad(), "bad")
    bot_bottle_host.register(_plugin("bot_bottle_register_backends", "good"), "good")
    assert [c.name for c in bot_bottle_host.components("backends")] == ["good"]
    bad = bot_bottle_host.infos["bad"]
    assert bad.status is Status.FAILED
    assert "RuntimeError: no luck" in (bad.error or "")


def test_a_hook_returning_junk_fails_its_plugin(bot_bottle_host: PluginHost) -> None:
    class Junk:
        @hookimpl
        def bot_bottle_register_dlp_detectors(self) -> list[str]:
            return ["not a registration"]

    bot_bottle_host.register(Junk(), "junk")
    assert bot_bottle_host.components("dlp_detectors") == []
    assert "expected Registration records" in (bot_bottle_host.infos["junk"].error or "")


def test_duplicate_names_are_refused_naming_both_plugins(bot_bottle_host: PluginHost) -> None:
    bot_bottle_host.register(_plugin("bot_bottle_register_backends", "docker", "x"), "one")
    bot_bottle_host.register(_plugin("bot_bottle_register_backends", "docker"), "two")
    assert [c.name for c in bot_bottle_host.components("backends")] == ["x"]
    with pytest.raises(PluginConflictError) as err:
        bot_bottle_host.component("backends", "docker")
    assert "one" in err.value.message and "two" in err.value.message


def test_unknown_component_error_lists_what_is_installed(bot_bottle_host: PluginHost) -> None:
    bot_bottle_host.register(_plugin("bot_bottle_register_agent_providers", "claude"), "p")
    with pytest.raises(UnknownPluginError) as err:
        bot_bottle_host.component("agent_providers", "gemini")
    assert "'gemini'" in err.value.message
    assert "claude" in err.value.message


def test_a_failing_factory_is_a_plugin_error(bot_bottle_host: PluginHost) -> None:
    class P:
        @hookimpl
        def bot_bottle_register_freezers(self) -> list[Registration[object]]:
            def boom() -> object:
                raise ImportError("docker SDK missing")

            return [Registration("docker", boom)]

    bot_bottle_host.register(P(), "p")
    with pytest.raises(PluginError, match="docker SDK missing"):
        bot_bottle_host.create("freezers", "docker")


def test_an_unknown_hook_name_fails_registration(bot_bottle_host: PluginHost) -> None:
    class Typo:
        @hookimpl
        def bot_bottle_register_backend(self) -> list[object]:  # missing "s"
            return []

    info = bot_bottle_host.register(Typo(), "typo")
    assert info.status is Status.FAILED
    assert "registration failed" in (info.error or "")


# -- contrib drop-ins -----------------------------------------------------------


def _host(contrib: Path, **env: str) -> PluginHost:
    return PluginHost(environ=env, contrib=contrib, load_entry_points=False).load()


def test_contrib_drop_in_is_discovered_and_listed_as_contrib(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "contrib/internal-hosts", tmp_path / "internal-hosts")
    host = _host(tmp_path)
    info = host.infos["internal-hosts"]
    assert info.source is Source.CONTRIB
    assert info.status is Status.ACTIVE, info.error
    assert info.hooks == ["register_dlp_detectors"]
    detector = host.create("dlp_detectors", "internal_hostnames")
    # the relative import of the sibling module worked
    assert type(detector).__module__.endswith("internal_hosts.detector")


def test_contrib_without_plugin_module_is_failed(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    info = _host(tmp_path).infos["empty"]
    assert info.status is Status.FAILED
    assert "no plugin.py" in (info.error or "")


def test_contrib_import_error_is_recorded_not_raised(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/plugin.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "worse").mkdir()
    (tmp_path / "worse/plugin.py").write_text("raise SystemExit(3)\n")
    host = _host(tmp_path)
    assert "ModuleNotFoundError" in (host.infos["bad"].error or "")
    assert host.infos["worse"].status is Status.FAILED


def test_allow_list_loads_only_named_plugins(tmp_path: Path) -> None:
    for name in ("wanted", "unwanted"):
        (tmp_path / name).mkdir()
    (tmp_path / "wanted/plugin.py").write_text("")
    # Would fail if imported: proves selection happens before import.
    (tmp_path / "unwanted/plugin.py").write_text("raise RuntimeError('imported')\n")
    host = _host(tmp_path, BOT_BOTTLE_PLUGINS="wanted")
    assert host.infos["wanted"].status is Status.ACTIVE
    assert host.infos["unwanted"].status is Status.DISABLED


def test_empty_allow_list_loads_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/plugin.py").write_text("raise RuntimeError('imported')\n")
    assert _host(tmp_path, BOT_BOTTLE_PLUGINS="").infos["a"].status is Status.DISABLED


def test_block_list_wins_over_allow_list(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/plugin.py").write_text("raise RuntimeError('imported')\n")
    host = _host(tmp_path, BOT_BOTTLE_PLUGINS="a", BOT_BOTTLE_DISABLED_PLUGINS="a")
    assert host.infos["a"].status is Status.DISABLED


def test_strict_mode_turns_a_failure_into_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/plugin.py").write_text("raise RuntimeError('nope')\n")
    with pytest.raises(PluginError, match="nope"):
        _host(tmp_path, BOT_BOTTLE_STRICT_PLUGINS="1")


# -- entry points -----------------------------------------------------------------


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for mod in [m for m in sys.modules if m.startswith("fakeplug_")]:
        del sys.modules[mod]


def test_entry_points_are_discovered_with_distribution_and_version(fake_site: Path) -> None:
    (fake_site / "fakeplug_ok.py").write_text(
        "from bot_bottle import Registration, hookimpl\n"
        "@hookimpl\n"
        "def bot_bottle_register_backends():\n"
        "    return [Registration('fake', object, 'a fake backend')]\n"
    )
    (fake_site / "fakeplug_bad.py").write_text("raise ImportError('libfoo missing')\n")
    make_dist_info(fake_site, "fake-ok", "1.2.3", {"fake-ok": "fakeplug_ok"})
    make_dist_info(fake_site, "fake-bad", "0.0.1", {"fake-bad": "fakeplug_bad"})
    host = PluginHost(environ={}, contrib=fake_site / "none").load()
    ok, bad = host.infos["fake-ok"], host.infos["fake-bad"]
    assert (ok.distribution, ok.version, ok.source) == ("fake-ok", "1.2.3", Source.ENTRY_POINT)
    assert ok.status is Status.ACTIVE
    # Installed backends (bot-bottle-docker) are listed next to the fake one.
    assert "fake" in [c.name for c in host.components("backends")]
    assert bad.status is Status.FAILED
    assert bad.error == "import failed: ImportError: libfoo missing"


def test_selection_by_distribution_name(fake_site: Path) -> None:
    (fake_site / "fakeplug_sel.py").write_text("")
    make_dist_info(fake_site, "fake-sel", "1.0", {"sel": "fakeplug_sel"})
    host = PluginHost(environ={"BOT_BOTTLE_DISABLED_PLUGINS": "fake-sel"}, contrib=fake_site)
    assert host.load().infos["sel"].status is Status.DISABLED
