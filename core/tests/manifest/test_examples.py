"""The shipped examples and the files 'init' writes load as documented."""

from __future__ import annotations

from pathlib import Path

from bot_bottle.manifest import Manifest, StaticKeyOptions
from bot_bottle.manifest.starter import FILES
from bot_bottle.plugins import PluginHost

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"


def test_examples_load(host: PluginHost) -> None:
    m = Manifest(home=EXAMPLES, host=host)
    assert [r.name for r in m.agents()] == ["implementer", "reviewer"]
    impl = m.agent("implementer")
    b = impl.bottle
    assert b.chain == ["dev", "base"]
    assert b.env.keys() == {"LOG_LEVEL", "GITEA_TOKEN", "DEPLOY_PASSPHRASE"}
    assert [r.host for r in b.egress.routes] == [
        "api.git.example.test",
        "git.example.test",
        "pypi.org",
    ]
    assert b.egress.upstream_ca == "~/.bot-bottle/ca/internal.pem"
    repo = b.repos[0]
    assert (repo.url.host, repo.url.port) == ("git.example.test", 2222)
    assert isinstance(impl.resolved_bottle.key_options["widgets"], StaticKeyOptions)
    assert b.sidecar_extra_hosts() == {"git.example.test": "127.0.0.1"}
    assert impl.git_identity.summary() == "Implementer Bot (agent) <agent@example.test> (bottle)"
    assert m.agent("reviewer").bottle.chain == ["base"]


def test_init_files_load(tmp_path: Path, host: PluginHost) -> None:
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    m = Manifest(home=tmp_path, host=host)
    assert m.agent("assistant").bottle.name == "base"
    assert m.bottle("dev").bottle.chain == ["dev", "base"]
