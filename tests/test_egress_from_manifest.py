"""The egress config rendered from real manifest files (tmp BOT_BOTTLE_HOME),
with the installed DLP detectors, parsed back the way the sidecar loads it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from bot_bottle import Registration, hookimpl
from bot_bottle.contracts.provider import ProviderRoute
from bot_bottle.egress.config import EgressConfig
from bot_bottle.egress.from_manifest import (
    UPSTREAM_CA_SIDECAR_PATH,
    EgressPlan,
    egress_from_manifest,
)
from bot_bottle.errors import BotBottleError
from bot_bottle.manifest import Bottle, Manifest, resolve_env
from bot_bottle.plugins import PluginHost
from bot_bottle.secrets import Secret

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBzcZ5e+jvaVFU4nDvLSCdBF4nJJmu9FAsVMJoN2rBhP"
GH_TOKEN = "gh-token-value-5f1c2a9d7e3b"
NPM_TOKEN = "npm-token-value-0a8b7c6d5e4f"
PROVIDER_TOKEN = "provider-oauth-value-99aa88bb"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Provider:
    options_model = _Options


class _FakeProvider:
    @hookimpl
    def bot_bottle_register_agent_providers(self) -> list[Registration[object]]:
        return [Registration("fake", _Provider)]


@pytest.fixture
def host(tmp_path: Path) -> PluginHost:
    # The installed plugins (the built-in DLP detectors among them) plus a
    # fake agent provider; no contrib directory.
    h = PluginHost(environ={}, contrib=tmp_path / "no-contrib").load()
    h.register(_FakeProvider(), "fake-provider")
    return h


def _write(home: Path, name: str, frontmatter: str) -> None:
    path = home / "bottles" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    fm = textwrap.dedent(frontmatter).strip("\n")
    path.write_text(f"---\n{fm}\n---\n", encoding="utf-8")


def _bottle(home: Path, host: PluginHost, name: str = "dev") -> Bottle:
    return Manifest(home=home, host=host).bottle(name).bottle


def _full_bottle(home: Path) -> Path:
    ca = home / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    _write(
        home,
        "base",
        """
        agent_provider: {template: fake}
        extra_hosts: {git.corp.test: 10.1.2.3}
        """,
    )
    _write(
        home,
        "dev",
        f"""
        extends: base
        env:
          LOG_LEVEL: debug
          DB_PASSWORD: "${{DB_PASSWORD_ON_HOST}}"
          SHORT: "${{SHORT_ON_HOST}}"
        git_gate:
          repos:
            - name: app
              url: ssh://git@git.corp.test/team/app.git
              host_key: {HOST_KEY}
              key: {{provider: static, path: ~/.ssh/app_key}}
              extra_hosts: {{forge.corp.test: 10.1.2.4}}
        egress:
          log: full
          upstream_ca: {ca}
          routes:
            - host: api.github.com
              auth: {{scheme: token, token_ref: GH_TOKEN}}
              matches:
                - paths: [{{type: prefix, value: /repos/team}}]
                  methods: [GET, POST]
                - paths: [{{type: regex, value: "/orgs/[a-z]+"}}]
                  headers: [{{name: X-Team, value: blue}}]
            - host: registry.npmjs.org
              auth: {{scheme: Bearer, token_ref: NPM_TOKEN}}
              dlp: {{outbound_detectors: false, inbound_detectors: false}}
            - host: github.com
              ports: [443, 8443]
              websocket: true
              git: {{fetch: true}}
              dlp: {{outbound_detectors: [known_secrets]}}
            - host: API.Anthropic.com
        """,
    )
    return ca


def test_full_bottle_renders_a_config_the_sidecar_parses(
    bot_bottle_home: Path, host: PluginHost
) -> None:
    ca = _full_bottle(bot_bottle_home)
    bottle = _bottle(bot_bottle_home, host)
    host_env = {
        "GH_TOKEN": GH_TOKEN,
        "NPM_TOKEN": NPM_TOKEN,
        "DB_PASSWORD_ON_HOST": "db-password-31f9a7",
        "SHORT_ON_HOST": "abc",
    }
    env_secrets = resolve_env(bottle.env, host_env=host_env)
    plan = egress_from_manifest(
        bottle,
        host=host,
        host_env=host_env,
        provider_routes=[
            ProviderRoute("api.anthropic.com", auth_scheme="Bearer", token=Secret(PROVIDER_TOKEN))
        ],
        provider_name="fake",
        env_secrets=env_secrets,
    )
    assert isinstance(plan, EgressPlan)
    path = bot_bottle_home / "egress.json"
    plan.config.write(path)
    text = path.read_text()
    # The file holds slot names only; no secret value anywhere in it.
    for value in (GH_TOKEN, NPM_TOKEN, PROVIDER_TOKEN, "db-password-31f9a7"):
        assert value not in text
    loaded = EgressConfig.load(path)  # what the sidecar does at start and on SIGHUP
    assert loaded == plan.config

    routes = {r.host: r for r in loaded.routes}
    # The provider owns its host: the bottle's route for it is dropped.
    assert list(routes) == [
        "api.anthropic.com",
        "api.github.com",
        "registry.npmjs.org",
        "github.com",
    ]
    assert routes["api.anthropic.com"].source == "provider:fake"
    assert loaded.log_level == "full"
    assert loaded.upstream_ca == UPSTREAM_CA_SIDECAR_PATH
    assert plan.upstream_ca == ca
    assert loaded.extra_hosts == {"git.corp.test": "10.1.2.3", "forge.corp.test": "10.1.2.4"}

    gh = routes["api.github.com"]
    assert gh.auth is not None and gh.auth.scheme == "token"
    assert gh.matches[0].methods == ("GET", "POST")
    assert gh.matches[0].paths[0].matches("/repos/team/app")
    assert not gh.matches[0].paths[0].matches("/repos/teams")
    assert gh.matches[1].paths[0].matches("/orgs/acme")
    assert gh.matches[1].headers[0].name == "x-team"
    assert not gh.git.fetch and routes["github.com"].git.fetch
    assert routes["github.com"].allowed_ports == (443, 8443)
    assert routes["github.com"].websocket and not gh.websocket
    assert gh.allowed_ports == (443, 80)

    # dlp: absent -> every installed detector of that direction; false -> off; a list as given.
    assert gh.dlp.outbound_detectors == ("known_secrets", "token_patterns")
    assert gh.dlp.inbound_detectors == ("prompt_injection",)
    assert routes["registry.npmjs.org"].dlp.outbound_detectors is False
    assert routes["registry.npmjs.org"].dlp.inbound_detectors is False
    assert routes["github.com"].dlp.outbound_detectors == ("known_secrets",)
    assert routes["api.anthropic.com"].dlp.outbound_detectors == ("known_secrets", "token_patterns")

    # Token slots, in route order, hold the host variables' values.
    slots = {r.host: r.auth.token_slot for r in loaded.routes if r.auth is not None}
    assert {h: plan.tokens[s].reveal() for h, s in slots.items()} == {
        "api.anthropic.com": PROVIDER_TOKEN,
        "api.github.com": GH_TOKEN,
        "registry.npmjs.org": NPM_TOKEN,
    }
    # Interpolated env values are known secrets; literals and short values are not.
    assert [s.reveal() for s in plan.known_secrets.values()] == ["db-password-31f9a7"]
    assert list(plan.known_secrets) == ["EGRESS_SECRET_1"]
    assert set(plan.daemon_env()) == {*plan.tokens, "EGRESS_SECRET_1"}
    assert "db-password" not in repr(plan)


def test_unset_token_variable_names_variable_and_route(
    bot_bottle_home: Path, host: PluginHost
) -> None:
    _full_bottle(bot_bottle_home)
    bottle = _bottle(bot_bottle_home, host)
    with pytest.raises(BotBottleError) as info:
        egress_from_manifest(bottle, host=host, host_env={"GH_TOKEN": GH_TOKEN, "NPM_TOKEN": ""})
    message = info.value.message
    assert "NPM_TOKEN" in message and "registry.npmjs.org" in message
    assert "egress.routes[1]" in message and "'dev'" in message
    assert GH_TOKEN not in message
    assert info.value.hint and "export" in info.value.hint


def test_detector_for_the_other_direction_is_refused(
    bot_bottle_home: Path, host: PluginHost
) -> None:
    _write(
        bot_bottle_home,
        "dev",
        """
        agent_provider: {template: fake}
        egress:
          routes:
            - host: example.test
              dlp: {outbound_detectors: [prompt_injection]}
        """,
    )
    with pytest.raises(BotBottleError) as info:
        egress_from_manifest(_bottle(bot_bottle_home, host), host=host, host_env={})
    assert "prompt_injection" in info.value.message and "example.test" in info.value.message
    assert info.value.hint and "inbound_detectors" in info.value.hint


def test_missing_upstream_ca_file_is_an_error(bot_bottle_home: Path, host: PluginHost) -> None:
    _write(
        bot_bottle_home,
        "dev",
        f"""
        agent_provider: {{template: fake}}
        egress:
          upstream_ca: {bot_bottle_home / "nope.pem"}
        """,
    )
    with pytest.raises(BotBottleError, match="upstream_ca") as info:
        egress_from_manifest(_bottle(bot_bottle_home, host), host=host, host_env={})
    assert info.value.hint


def test_bottle_without_egress_renders_provider_routes_only(
    bot_bottle_home: Path, host: PluginHost
) -> None:
    _write(bot_bottle_home, "dev", "agent_provider: {template: fake}")
    plan = egress_from_manifest(
        _bottle(bot_bottle_home, host),
        host=host,
        host_env={},
        provider_routes=[ProviderRoute("api.provider.test")],
        provider_dlp={"outbound_detectors": False, "inbound_detectors": False},
    )
    assert [r.host for r in plan.config.routes] == ["api.provider.test"]
    assert plan.config.routes[0].dlp.outbound_detectors is False
    assert plan.tokens == {} and plan.known_secrets == {} and plan.upstream_ca is None
    assert plan.config.upstream_ca is None and plan.config.log_level == "blocks"


def test_rendered_config_boots_the_egress_daemon(
    bot_bottle_home: Path, host: PluginHost, tmp_path: Path
) -> None:
    # The real daemon loads the rendered file, the token and secret slots and
    # the selected detectors (an unknown one would stop it booting).
    import httpx2 as httpx
    from bot_bottle_testkit.egress import make_test_pki, start_egress

    from bot_bottle.egress.ca import generate_bottle_ca

    pki = make_test_pki(tmp_path / "pki", ["upstream.test"])
    _write(
        bot_bottle_home,
        "dev",
        f"""
        agent_provider: {{template: fake}}
        env: {{DB_PASSWORD: "${{DB_PASSWORD_ON_HOST}}"}}
        egress:
          upstream_ca: {pki.ca_cert}
          routes:
            - host: api.github.com
              auth: {{scheme: token, token_ref: GH_TOKEN}}
            - host: github.com
              dlp: {{inbound_detectors: false}}
        """,
    )
    host_env = {"GH_TOKEN": GH_TOKEN, "DB_PASSWORD_ON_HOST": "db-password-31f9a7"}
    bottle = _bottle(bot_bottle_home, host)
    plan = egress_from_manifest(
        bottle,
        host=host,
        host_env=host_env,
        env_secrets=resolve_env(bottle.env, host_env=host_env),
        # The launcher mounts the CA at the sidecar path; here it stays put.
        upstream_ca_path=str(pki.ca_cert),
    )
    (tmp_path / "cfg").mkdir()
    plan.config.write(tmp_path / "cfg" / "egress.json")
    ca = generate_bottle_ca(tmp_path / "bottle-ca")
    env = {k: v.reveal() for k, v in plan.daemon_env().items()}
    proc = start_egress(
        tmp_path / "cfg" / "egress.json",
        ca.confdir,
        env={**env, "BOT_BOTTLE_HOME": str(bot_bottle_home)},
    )
    try:
        with httpx.Client(proxy=proc.proxy_url, trust_env=False, timeout=20) as client:
            doc = client.get("http://_egress.local/routes").json()
        routes = {r["host"]: r for r in doc["routes"]}
        assert routes["api.github.com"]["auth"] == {"scheme": "token", "injected": True}
        assert routes["api.github.com"]["dlp"] == {
            "outbound_detectors": ["known_secrets", "token_patterns"],
            "inbound_detectors": ["prompt_injection"],
        }
        assert routes["github.com"]["dlp"]["inbound_detectors"] is False
        assert proc.count("token slots missing from the environment") == 0
        log = "\n".join(proc.lines)
        assert GH_TOKEN not in log and "db-password-31f9a7" not in log
    finally:
        proc.stop()
