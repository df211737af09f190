"""The github key provisioner is found through its entry point, like any plugin."""

from __future__ import annotations

from bot_bottle.forge_kit import ForgeKeyOptions
from bot_bottle.plugins import PluginHost, Source, Status
from bot_bottle_github.provisioner import GitHubKeys


def test_discovered_as_an_entry_point_plugin() -> None:
    host = PluginHost(environ={}).load()
    comps = {c.name: c for c in host.components("key_provisioners")}
    assert comps["github"].distribution == "bot-bottle-github"
    info = host.infos["github"]
    assert (info.source, info.status) == (Source.ENTRY_POINT, Status.ACTIVE)


def test_builds_with_the_shared_forge_options() -> None:
    prov = PluginHost(environ={}).load().create("key_provisioners", "github")
    assert isinstance(prov, GitHubKeys) and prov.name == "github"
    assert prov.options_model is ForgeKeyOptions
