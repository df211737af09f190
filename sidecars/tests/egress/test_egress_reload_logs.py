"""SIGHUP reload (valid and invalid files) and what each log level writes."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess, auth_digest

from bot_bottle.egress.render import RouteSpec
from bot_bottle.secrets import Secret

from .conftest import API_TOKEN, Env

AGENT_SECRET = "agent-held-secret-9f8e7d6c"
SHAPED = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"


def _routes(env: Env, *hosts: str) -> list[RouteSpec]:
    port = env.upstream.https_port
    return [
        RouteSpec(h, ports=(port,), auth_scheme="Bearer", token=Secret(API_TOKEN))
        if h == "api.upstream.test"
        else RouteSpec(h, ports=(port,))
        for h in hosts
    ]


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The directory, not the file, is what a container would bind-mount.
    return tmp_path_factory.mktemp("egress") / "egress.json"


@pytest.fixture(scope="module")
def shared_daemon(egress_env: Env, cfg_path: Path) -> Iterator[EgressProcess]:
    _, env = egress_env.write_config(
        cfg_path, _routes(egress_env, "api.upstream.test"), log_level="full"
    )
    proc = egress_env.start(cfg_path, env)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def daemon(shared_daemon: EgressProcess, egress_env: Env, cfg_path: Path) -> EgressProcess:
    """The module's daemon, reloaded with the base config before each test."""
    _set_level(shared_daemon, egress_env, cfg_path, "full")
    return shared_daemon


@pytest.fixture
def client(daemon: EgressProcess, egress_env: Env) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(egress_env.ca.agent_cert))
    with httpx.Client(proxy=daemon.proxy_url, verify=ctx, trust_env=False, timeout=20) as c:
        yield c


def _get(client: httpx.Client, env: Env, host: str, path: str = "/") -> httpx.Response:
    return client.get(
        f"https://{host}:{env.upstream.https_port}{path}",
        headers={"Authorization": f"Bearer {AGENT_SECRET}"},
    )


def test_reload_with_valid_file_swaps_routes(
    daemon: EgressProcess, client: httpx.Client, egress_env: Env, cfg_path: Path
) -> None:
    assert _get(client, egress_env, "noauth.upstream.test").status_code == 403
    egress_env.write_config(
        cfg_path,
        _routes(egress_env, "api.upstream.test", "noauth.upstream.test"),
        log_level="full",
    )
    n = daemon.count("reloaded")
    daemon.reload()
    daemon.wait_for("reloaded", count=n + 1)
    assert _get(client, egress_env, "noauth.upstream.test").status_code == 200
    r = _get(client, egress_env, "api.upstream.test")
    assert r.json()["headers"]["authorization"] == auth_digest(f"Bearer {API_TOKEN}")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "invalid"),
        ('{"routes": [{"host": "x.test", "bogus": 1}]}', "bogus"),
        # RE2 has no backreferences: an operator regex it cannot run is an error.
        (
            '{"routes": [{"host": "x.test", "matches": [{"paths": '
            '[{"type": "regex", "value": "/(a)\\\\1"}]}]}]}',
            "RE2",
        ),
        (
            '{"routes": [{"host": "x.test", "dlp": {"outbound_detectors": ["nope"]}}]}',
            "no dlp detector named 'nope'",
        ),
    ],
    ids=["not-json", "unknown-key", "re2-rejects", "unknown-detector"],
)
def test_reload_with_invalid_file_keeps_previous_routes(
    daemon: EgressProcess,
    client: httpx.Client,
    egress_env: Env,
    cfg_path: Path,
    text: str,
    why: str,
) -> None:
    n = daemon.count("reload failed; keeping the previous routes")
    cfg_path.write_text(text)
    daemon.reload()
    failed = daemon.wait_for("reload failed; keeping the previous routes", count=n + 1)
    assert why in failed["error"]
    assert _get(client, egress_env, "api.upstream.test").status_code == 200
    assert daemon.proc.poll() is None


def _lines_since(daemon: EgressProcess, start: int) -> list[str]:
    return list(daemon.lines)[start:]


def _traffic(client: httpx.Client, env: Env) -> None:
    assert _get(client, env, "api.upstream.test", "/v1/ok").status_code == 200
    # Refused, with a token-shaped string in the path that the log must hide.
    assert _get(client, env, "unlisted.upstream.test", f"/v1/{SHAPED}").status_code == 403


def _set_level(daemon: EgressProcess, env: Env, cfg_path: Path, level: str) -> None:
    n = daemon.count("reloaded")
    env.write_config(cfg_path, _routes(env, "api.upstream.test"), log_level=level)
    daemon.reload()
    if level != "off":
        daemon.wait_for("reloaded", count=n + 1)
    else:
        # "off" silences the reload line itself; give the signal time to land.
        time.sleep(0.5)


def test_log_levels_and_no_secret_in_any_line(
    daemon: EgressProcess, client: httpx.Client, egress_env: Env, cfg_path: Path
) -> None:
    start = len(daemon.lines)
    refused = daemon.count("refused")
    _traffic(client, egress_env)
    daemon.wait_for("refused", count=refused + 1)
    full = _lines_since(daemon, start)
    events = [json.loads(line).get("event") for line in full]
    assert "request" in events and "response" in events and "refused" in events

    _set_level(daemon, egress_env, cfg_path, "blocks")
    start = len(daemon.lines)
    _traffic(client, egress_env)
    daemon.wait_for("refused", count=refused + 2)
    blocks = _lines_since(daemon, start)
    assert blocks and all('"event": "refused"' in line for line in blocks), blocks

    _set_level(daemon, egress_env, cfg_path, "off")
    start = len(daemon.lines)
    _traffic(client, egress_env)
    off = _lines_since(daemon, start)
    assert off == []
    assert daemon.lines[0].find('"egress started"') > 0

    everything = "\n".join(daemon.lines)
    for secret in (API_TOKEN, AGENT_SECRET, SHAPED):
        assert secret not in everything
    assert "[REDACTED]" in "\n".join(full + blocks)


def test_bad_config_at_start_is_one_clear_line_not_a_traceback(
    egress_env: Env, tmp_path: Path
) -> None:
    import subprocess
    import sys

    bad = tmp_path / "egress.json"
    bad.write_text('{"routes": [{"host": "10.0.0.1"}]}')
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot_bottle_sidecars.egress",
            *("--config", str(bad), "--confdir", str(egress_env.ca.confdir)),
            *("--listen-port", "0"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stdout + r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert '"egress failed to start"' in line and "IP address" in line


@pytest.fixture(scope="module")
def bare_daemon(
    egress_env: Env, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EgressProcess]:
    """No upstream_ca and no token in the environment."""
    path = tmp_path_factory.mktemp("bare") / "egress.json"
    egress_env.write_config(
        path, _routes(egress_env, "api.upstream.test", "noauth.upstream.test"), upstream_ca=None
    )
    proc = egress_env.start(path, {})
    try:
        yield proc
    finally:
        proc.stop()


def _bare_get(daemon: EgressProcess, env: Env, host: str) -> httpx.Response:
    ctx = ssl.create_default_context(cafile=str(env.ca.agent_cert))
    with httpx.Client(proxy=daemon.proxy_url, verify=ctx, trust_env=False, timeout=20) as c:
        return c.get(f"https://{host}:{env.upstream.https_port}/v1/x")


def test_upstream_tls_is_verified_without_the_bottles_upstream_ca(
    bare_daemon: EgressProcess, egress_env: Env
) -> None:
    # The test upstream's CA is not in the system bundle: the proxy must refuse
    # to talk to it rather than forward unverified.
    r = _bare_get(bare_daemon, egress_env, "noauth.upstream.test")
    assert r.status_code == 502
    assert "certificate" in r.text.lower()


def test_reload_can_add_the_upstream_ca(
    bare_daemon: EgressProcess, egress_env: Env, tmp_path: Path
) -> None:
    path = bare_daemon.config_path
    n = bare_daemon.count("reloaded")
    routes = _routes(egress_env, "api.upstream.test", "noauth.upstream.test")
    # A CA file that does not exist: the reload fails and changes nothing.
    egress_env.write_config(path, routes, upstream_ca=str(tmp_path / "missing.pem"))
    failures = bare_daemon.count("reload failed; keeping the previous routes")
    bare_daemon.reload()
    bare_daemon.wait_for("reload failed; keeping the previous routes", count=failures + 1)
    assert _bare_get(bare_daemon, egress_env, "noauth.upstream.test").status_code == 502
    egress_env.write_config(path, routes)  # with the test CA
    bare_daemon.reload()
    bare_daemon.wait_for("reloaded", count=n + 1)
    assert _bare_get(bare_daemon, egress_env, "noauth.upstream.test").status_code == 200


def test_missing_token_refuses_instead_of_forwarding_unauthenticated(
    bare_daemon: EgressProcess, egress_env: Env
) -> None:
    bare_daemon.wait_for("token slots missing from the environment")
    r = _bare_get(bare_daemon, egress_env, "api.upstream.test")
    assert r.status_code == 403 and "credential-unavailable" in r.text
