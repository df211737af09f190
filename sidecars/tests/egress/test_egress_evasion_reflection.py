"""Evasive encodings through a real egress daemon: every evasive form of a token is
refused on the way out, and an upstream that reflects the credential egress
injected no longer hands it to the agent (``credential-reflected``). Real
mitmproxy daemon, a local HTTPS upstream; nothing leaves 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess

from bot_bottle.egress.render import RouteSpec
from bot_bottle.secrets import Secret
from tests import dlp_evasions

from .conftest import Env

ROUTE_TOKEN = "tok-reflect-Qm7vR2xK9pLw4Zt8"
HOST = "api.upstream.test"
#: A route with auth and no DLP at all: reflection is searched regardless.
BARE = "ws.upstream.test"
FORMS = dlp_evasions.token_forms()


@pytest.fixture(scope="module")
def daemon(egress_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProcess]:
    path = tmp_path_factory.mktemp("evasion-cfg") / "egress.json"
    https = egress_env.upstream.https_port
    routes = [
        RouteSpec(
            HOST,
            ports=(https,),
            auth_scheme="Bearer",
            token=Secret(ROUTE_TOKEN),
            outbound_detectors=("known_secrets", "token_patterns"),
            inbound_detectors=False,
        ),
        RouteSpec(
            BARE,
            ports=(https,),
            auth_scheme="Bearer",
            token=Secret(ROUTE_TOKEN),
            outbound_detectors=False,
            inbound_detectors=False,
        ),
    ]
    with egress_env.daemon(path, routes, log_level="full") as proc:
        yield proc


@pytest.fixture
def client(daemon: EgressProcess, egress_env: Env) -> Iterator[httpx.Client]:
    with egress_env.client(daemon) as c:
        yield c


def _url(env: Env, path: str, host: str = HOST) -> str:
    return env.url(host, path)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_evasive_form_of_a_token_is_refused(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env, form: str
) -> None:
    before = len(egress_env.upstream.seen)
    r = client.post(_url(egress_env, "/v1/upload"), content=FORMS[form])
    assert r.status_code == 403, (form, r.text)
    assert r.headers["X-Bot-Bottle-Egress-Rule"] == "dlp-outbound"
    assert "token_patterns/github-pat" in r.text
    assert dlp_evasions.TOKEN not in r.text
    assert len(egress_env.upstream.seen) == before
    assert dlp_evasions.TOKEN not in "\n".join(daemon.lines)


@pytest.mark.parametrize("form", sorted(dlp_evasions.key_forms()))
def test_private_key_without_its_armour_is_refused(
    client: httpx.Client, egress_env: Env, form: str
) -> None:
    r = client.post(_url(egress_env, "/v1/upload"), content=dlp_evasions.key_forms()[form])
    assert r.status_code == 403, (form, r.text)
    assert "token_patterns/private-key" in r.text


@pytest.mark.parametrize("host", [HOST, BARE])
@pytest.mark.parametrize("form", ["header", "body", "base64", "gzip", "split", "utf16", "lower"])
def test_reflected_credential_never_reaches_the_agent(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env, form: str, host: str
) -> None:
    # Every line of the earlier tests read first: a refusal of theirs that
    # arrived late was taken for this one's on a loaded machine.
    daemon.settle()
    before = daemon.count("refused")
    got = b""
    try:
        with client.stream("GET", _url(egress_env, f"/reflect?{form}", host)) as r:
            got += "\n".join(f"{k}: {v}" for k, v in r.headers.items()).encode()
            for chunk in r.iter_raw():
                got += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the response was cut: that is the point
    for leaked in (ROUTE_TOKEN, ROUTE_TOKEN[: len(ROUTE_TOKEN) // 2], ROUTE_TOKEN.lower()):
        assert leaked.encode() not in got, form
    assert ROUTE_TOKEN.encode("utf-16-le") not in got
    record = daemon.wait_for("refused", count=before + 1)
    assert record["rule"] == "credential-reflected"
    assert ROUTE_TOKEN not in "\n".join(daemon.lines)


def test_a_response_without_the_credential_passes(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(_url(egress_env, "/reflect?none"))
    assert r.status_code == 200 and r.text == "no reflection"
    r = client.get(_url(egress_env, "/v1/models"))
    assert r.status_code == 200 and r.json()["headers"]["authorization"].startswith("sha256:")
