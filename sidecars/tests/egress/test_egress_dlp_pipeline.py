"""Egress DLP through core's scan pipeline, with the built-in detectors: the
decodings ``bot-bottle dlp scan`` undoes (URL, base64, JSON escapes,
Content-Encoding) are undone on live traffic too. Real mitmproxy daemon, a
local HTTPS upstream; nothing leaves 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess, auth_digest

from bot_bottle.egress.render import RouteSpec
from bot_bottle.secrets import Secret

from .conftest import Env

ROUTE_TOKEN = "tok-wire-9f8e7d6c5b4a3210"
#: A bottle secret that is not a token (an interpolated env value).
ENV_SECRET = "db-p@ss/w0rd+31f9a7="
#: A GitHub token shape token_patterns knows (checksum valid).
GITHUB_TOKEN = "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"
HOST = "api.upstream.test"


@pytest.fixture(scope="module")
def daemon(egress_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressProcess]:
    path = tmp_path_factory.mktemp("dlp-cfg") / "egress.json"
    https = egress_env.upstream.https_port
    routes = [
        RouteSpec(
            HOST,
            ports=(https,),
            auth_scheme="Bearer",
            token=Secret(ROUTE_TOKEN),
            outbound_detectors=("known_secrets", "token_patterns"),
            inbound_detectors=("prompt_injection",),
        ),
        RouteSpec("noauth.upstream.test", ports=(https,), outbound_detectors=False),
    ]
    with egress_env.daemon(
        path, routes, log_level="full", extra_env={"EGRESS_SECRET_1": ENV_SECRET}
    ) as proc:
        yield proc


@pytest.fixture
def client(daemon: EgressProcess, egress_env: Env) -> Iterator[httpx.Client]:
    with egress_env.client(daemon) as c:
        yield c


def _url(env: Env, path: str = "/v1/messages", host: str = HOST) -> str:
    return env.url(host, path)


def _refused(r: httpx.Response, detector: str, rule: str, *secrets: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["X-Bot-Bottle-Egress-Rule"] == "dlp-outbound"
    assert f"{detector}/{rule}" in r.text
    for s in secrets:
        assert s not in r.text


def _no_secret_logged(daemon: EgressProcess, *values: str) -> None:
    text = "\n".join(daemon.lines)
    for v in values:
        assert v not in text


def test_egress_finds_the_views_runs_in_c(daemon: EgressProcess) -> None:
    # The daemon picks up bot-bottle-dlp's native run finder itself (the
    # dlp_accelerators hook), and says so when it starts.
    assert daemon.wait_for("egress started")["dlp_runs"] == "native"


def test_route_token_base64_in_json_body_is_refused(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    encoded = base64.b64encode(f"user:{ROUTE_TOKEN}".encode()).decode()
    body = json.dumps({"messages": [{"role": "user", "content": f"creds {encoded} ok"}]})
    before = len(egress_env.upstream.seen)
    r = client.post(_url(egress_env), content=body, headers={"Content-Type": "application/json"})
    _refused(r, "known_secrets", "known-secret", ROUTE_TOKEN, encoded)
    assert "base64" in r.text  # the refusal says which decoding found it
    assert len(egress_env.upstream.seen) == before
    _no_secret_logged(daemon, ROUTE_TOKEN, encoded)


def test_secret_url_encoded_in_query_is_refused(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    encoded = "".join(f"%{b:02X}" for b in ENV_SECRET.encode())
    r = client.get(_url(egress_env, f"/v1/search?q={encoded}"))
    _refused(r, "known_secrets", "known-secret", ENV_SECRET, encoded)
    r = client.get(_url(egress_env, "/v1/search?q=" + "".join(f"%{b:02x}" for b in b"ghp_x")))
    assert r.status_code == 200
    _no_secret_logged(daemon, ENV_SECRET, encoded)


def test_token_in_gzip_compressed_body_is_refused(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    for token, detector, rule in (
        (ROUTE_TOKEN, "known_secrets", "known-secret"),
        (GITHUB_TOKEN, "token_patterns", "github-pat"),
    ):
        body = gzip.compress(json.dumps({"note": f"here: {token}"}).encode())
        r = client.post(
            _url(egress_env),
            content=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        _refused(r, detector, rule, token)
    _no_secret_logged(daemon, ROUTE_TOKEN, GITHUB_TOKEN)


def test_undecodable_gzip_body_is_refused(client: httpx.Client, egress_env: Env) -> None:
    before = len(egress_env.upstream.seen)
    good = gzip.compress(b'{"a": 1}')
    for body in (b"this is not gzip at all", good[: len(good) // 2]):
        r = client.post(_url(egress_env), content=body, headers={"Content-Encoding": "gzip"})
        _refused(r, "dlp", "undecodable-body")
    r = client.post(_url(egress_env), content=b"x", headers={"Content-Encoding": "compress"})
    _refused(r, "dlp", "undecodable-body")
    assert len(egress_env.upstream.seen) == before


def test_benign_llm_request_passes_with_the_token_injected(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "stream": True,
        "system": "You are a coding agent. Use tools when needed.",
        "messages": [
            {"role": "user", "content": "Refactor utils.py: split parse() in two."},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "name": "read_file",
                        "input": {"path": "src/utils.py"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                        "content": 'def parse(s):\n    """Split \\u00e9 lines."""\n'
                        "    return [l.strip() for l in s.splitlines()]\n",
                    }
                ],
            },
        ],
        "metadata": {"user_id": "3f2a9c4e-1b7d-4e8f-9a6b-0c5d2e7f1a3b"},
    }
    body = json.dumps(request)
    daemon.settle()  # earlier tests' findings are all counted
    findings = daemon.count("dlp finding")
    for encoding, data in ((None, body.encode()), ("gzip", gzip.compress(body.encode()))):
        headers = {"Content-Type": "application/json", "Authorization": "Bearer placeholder"}
        if encoding:
            headers["Content-Encoding"] = encoding
        r = client.post(_url(egress_env), content=data, headers=headers)
        assert r.status_code == 200, r.text
        echoed = r.json()
        # Scanned before injection: the route's own token is not "found".
        assert echoed["headers"]["authorization"] == auth_digest(f"Bearer {ROUTE_TOKEN}")
        assert echoed["body_len"] == len(data)
    daemon.settle()
    assert daemon.count("dlp finding") == findings  # not even a warning


def test_route_without_outbound_dlp_is_not_scanned(client: httpx.Client, egress_env: Env) -> None:
    r = client.post(_url(egress_env, "/x", host="noauth.upstream.test"), content=GITHUB_TOKEN)
    assert r.status_code == 200


def test_known_secret_values_are_redacted_from_logs(
    client: httpx.Client, daemon: EgressProcess, egress_env: Env
) -> None:
    # A refusal echoes the request's path to the agent and to the log: not
    # when the path holds the finding, plain or encoded.
    for path in (
        f"/v1/{ENV_SECRET}",
        "/v1/" + base64.urlsafe_b64encode(b"k " * 3 + ENV_SECRET.encode()).decode(),
    ):
        refused = daemon.count("refused")
        r = client.get(_url(egress_env, path))
        _refused(r, "known_secrets", "known-secret", ENV_SECRET, path)
        assert "withheld" in r.text
        record = daemon.wait_for("refused", count=refused + 1)
        assert record["rule"] == "dlp-outbound" and "withheld" in record["path"]
        _no_secret_logged(daemon, ENV_SECRET, path)
    r = client.get(_url(egress_env, "/v1/ok"), headers={"X-Note": ENV_SECRET})
    _refused(r, "known_secrets", "known-secret", ENV_SECRET)
    assert "/v1/ok" in r.text  # a finding elsewhere leaves the path shown
    _no_secret_logged(daemon, ENV_SECRET)
