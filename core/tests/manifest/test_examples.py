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


def test_examples_satisfy_the_json_schema(host: PluginHost) -> None:
    import jsonschema

    from bot_bottle.manifest.document import read_document
    from bot_bottle.manifest.schema import agent_schema, bottle_schema

    validators = {
        "bottles": jsonschema.Draft202012Validator(bottle_schema(host)),
        "agents": jsonschema.Draft202012Validator(agent_schema()),
    }
    for validator in validators.values():
        validator.check_schema(validator.schema)
    for kind, validator in validators.items():
        for path in sorted((EXAMPLES / kind).glob("*.md")):
            errors = list(validator.iter_errors(read_document(path).data))
            assert errors == [], (path, [e.message for e in errors])
    from bot_bottle.manifest.document import parse_document

    for rel, text in FILES.items():
        data = parse_document(text, Path(rel)).data
        assert list(validators[rel.split("/")[0]].iter_errors(data)) == [], rel
    typo = {"agent_provider": {"template": "claude", "auth_tokn": "x"}}
    assert list(validators["bottles"].iter_errors(typo))
    unknown_detector = {
        "egress": {"routes": [{"host": "a.test", "dlp": {"outbound_detectors": ["nope"]}}]}
    }
    assert list(validators["bottles"].iter_errors(unknown_detector))
    gitea = bottle_schema(host)["$defs"]["key-gitea"]
    assert gitea["properties"]["provider"] == {"const": "gitea"}
    assert set(gitea["required"]) == {"provider", "api_url", "token_ref"}
