"""The egress config schema, host-side rendering and the bottle CA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot_bottle.contracts.provider import ProviderRoute
from bot_bottle.egress.config import EgressConfig, EgressConfigError, is_ip_literal
from bot_bottle.egress.render import RouteSpec, render_egress_config
from bot_bottle.secrets import Secret


def test_render_assigns_slots_and_writes_no_secret(tmp_path: Path) -> None:
    config, env = render_egress_config(
        [
            RouteSpec("api.example.test", auth_scheme="token", token=Secret("bottle-tok-1")),
            RouteSpec("plain.example.test"),
        ],
        [ProviderRoute("llm.example.test", "Bearer", Secret("provider-tok-2"))],
        provider_name="claude",
    )
    slots = {r.host: r.auth.token_slot if r.auth else None for r in config.routes}
    assert slots == {
        "llm.example.test": "EGRESS_TOKEN_1",
        "api.example.test": "EGRESS_TOKEN_2",
        "plain.example.test": None,
    }
    assert env["EGRESS_TOKEN_1"].reveal() == "provider-tok-2"
    config.write(tmp_path / "egress.json")
    text = (tmp_path / "egress.json").read_text()
    assert "provider-tok-2" not in text and "bottle-tok-1" not in text
    assert EgressConfig.load(tmp_path / "egress.json") == config


def test_provider_route_wins_its_host() -> None:
    config, env = render_egress_config(
        [RouteSpec("LLM.example.test", auth_scheme="Bearer", token=Secret("bottle-version"))],
        [ProviderRoute("llm.example.test", "Bearer", Secret("provider-version"))],
        provider_name="claude",
    )
    assert [r.source for r in config.routes] == ["provider:claude"]
    assert [s.reveal() for s in env.values()] == ["provider-version"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (RouteSpec("127.0.0.1"), "IP address"),
        (RouteSpec("bad host!"), "not a valid host name"),
        (RouteSpec("a.test", auth_scheme="Bearer"), "has no token"),
        (RouteSpec("a.test", token=Secret("x")), "without an auth scheme"),
        (
            RouteSpec("a.test", matches=({"paths": [{"type": "regex", "value": "(a)\\1"}]},)),
            "not supported by RE2",
        ),
        (RouteSpec("a.test", matches=({"paths": [{"typo": "prefix", "value": "/"}]},)), "typo"),
        (RouteSpec("a.test", matches=({"methods": ["GET /"]},)), "not an HTTP method"),
    ],
)
def test_bad_routes_are_config_errors_naming_the_route(spec: RouteSpec, needle: str) -> None:
    spec = RouteSpec(**{**spec.__dict__, "origin": "bottle dev, egress.routes[0]"})
    with pytest.raises(EgressConfigError) as info:
        render_egress_config([spec])
    assert needle in info.value.message
    assert "bottle dev" in info.value.message
    assert info.value.hint


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(EgressConfigError, match=r"routes\.0\.hots"):
        EgressConfig.parse(json.dumps({"routes": [{"hots": "a.test"}]}))


def test_duplicate_hosts_are_rejected() -> None:
    with pytest.raises(EgressConfigError, match="more than one route"):
        EgressConfig.parse(json.dumps({"routes": [{"host": "a.test"}, {"host": "A.test"}]}))


def test_token_slot_names_are_constrained() -> None:
    doc = {"routes": [{"host": "a.test", "auth": {"scheme": "Bearer", "token_slot": "HOME"}}]}
    with pytest.raises(EgressConfigError, match="EGRESS_TOKEN_"):
        EgressConfig.parse(json.dumps(doc))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "::ffff:10.0.0.1", "2130706433", "0x7f.1", "10.1"]
)
def test_ip_literal_spellings(host: str) -> None:
    assert is_ip_literal(host)


@pytest.mark.parametrize("host", ["api.example.test", "1password.com", "x1.test"])
def test_names_are_not_ip_literals(host: str) -> None:
    assert not is_ip_literal(host)
