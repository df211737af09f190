"""The egress decision, end to end: real mitmproxy daemon, real clients (curl,
httpx, git, raw TLS sockets), a local HTTPS upstream with its own CA."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from bot_bottle_testkit.egress import EgressProcess, auth_digest, ws_frame, ws_read_frame

from .conftest import API_TOKEN, MATCH_TOKEN, Env

Curl = Callable[..., subprocess.CompletedProcess[str]]


def body_status(r: subprocess.CompletedProcess[str]) -> tuple[str, int]:
    body, _, status = r.stdout.rpartition("\n")
    return body, int(status)


@pytest.fixture
def client(egress: EgressProcess, egress_env: Env) -> Iterator[httpx.Client]:
    ctx = ssl.create_default_context(cafile=str(egress_env.ca.agent_cert))
    with httpx.Client(proxy=egress.proxy_url, verify=ctx, trust_env=False, timeout=20) as c:
        yield c


def url(env: Env, host: str, path: str = "/") -> str:
    return f"https://{host}:{env.upstream.https_port}{path}"


def test_allowed_host_gets_injected_token_not_the_agents(curl: Curl, egress_env: Env) -> None:
    r = curl(url(egress_env, "api.upstream.test", "/v1/x"), "-H", "Authorization: Bearer agent-own")
    body, status = body_status(r)
    assert status == 200, r.stderr
    headers = json.loads(body)["headers"]
    assert headers["authorization"] == auth_digest(f"Bearer {API_TOKEN}")
    assert "agent-own" not in body


def test_token_scheme_is_injected(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(url(egress_env, "match.upstream.test", "/v1/models"))
    assert r.status_code == 200
    assert r.json()["headers"]["authorization"] == auth_digest(f"token {MATCH_TOKEN}")


def test_agent_authorization_is_stripped_on_route_without_auth(
    client: httpx.Client, egress_env: Env
) -> None:
    r = client.get(
        url(egress_env, "noauth.upstream.test"),
        headers={"Authorization": "Bearer agent-secret", "Proxy-Authorization": "Basic eA=="},
    )
    assert r.status_code == 200
    assert "authorization" not in r.json()["headers"]
    assert "proxy-authorization" not in r.json()["headers"]


def test_plain_http_route_is_served(curl: Curl, egress_env: Env) -> None:
    r = curl(f"http://api.upstream.test:{egress_env.upstream.http_port}/plain")
    body, status = body_status(r)
    assert status == 200
    assert json.loads(body)["headers"]["authorization"] == auth_digest(f"Bearer {API_TOKEN}")


def test_undeclared_host_is_refused_with_readable_403(curl: Curl, egress_env: Env) -> None:
    # unlisted.upstream.test is pinned to the upstream's address: only the
    # policy stands between it and the server. Not even a TCP connection opens.
    before = egress_env.upstream.connections
    body, status = body_status(curl(url(egress_env, "unlisted.upstream.test", "/x")))
    assert status == 403
    assert "rule: host-not-allowed" in body
    assert "supervise" in body and "list-egress-routes" in body
    body, status = body_status(
        curl(f"http://unlisted.upstream.test:{egress_env.upstream.http_port}/x")
    )
    assert status == 403 and "rule: host-not-allowed" in body
    assert egress_env.upstream.connections == before


def test_host_match_is_case_insensitive(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(url(egress_env, "API.Upstream.TEST", "/v1/x"))
    assert r.status_code == 200


def test_ip_literal_is_refused(curl: Curl, egress_env: Env) -> None:
    before = len(egress_env.upstream.seen)
    # -k: the refusal, not certificate checking, is under test here.
    r = curl(f"https://127.0.0.1:{egress_env.upstream.https_port}/", "-k")
    body, status = body_status(r)
    assert status == 403 and "rule: ip-literal" in body
    r = curl(f"http://127.0.0.1:{egress_env.upstream.http_port}/")
    body, status = body_status(r)
    assert status == 403 and "rule: ip-literal" in body
    assert len(egress_env.upstream.seen) == before


def test_undeclared_port_is_refused(curl: Curl, egress_env: Env) -> None:
    body, status = body_status(curl(url(egress_env, "noport.upstream.test")))
    assert status == 403 and "rule: port-not-allowed" in body
    body, status = body_status(
        curl(f"http://api.upstream.test:{egress_env.upstream.https_port + 1}/")
    )
    assert status == 403 and "rule: port-not-allowed" in body


@pytest.mark.parametrize(
    ("method", "path", "headers", "allowed"),
    [
        ("GET", "/v1", {}, True),
        ("GET", "/v1/models", {}, True),
        ("get", "/v1/models", {}, True),
        ("POST", "/v1/models", {}, False),  # method not in the /v1 entry
        ("GET", "/v10", {}, False),  # prefix matches whole segments
        ("GET", "/other", {}, False),
        ("POST", "/exact", {}, True),
        ("POST", "/exact/more", {}, False),
        ("GET", "/exact", {}, False),
        ("DELETE", "/items/42", {}, True),
        ("GET", "/items/42x", {}, False),  # regex matches the whole path
        ("GET", "/items/", {}, False),
        ("GET", "/hdr/a", {"X-Team": "blue"}, True),
        ("GET", "/hdr/a", {"x-team": "blue"}, True),
        ("GET", "/hdr/a", {"X-Team": "red"}, False),
        ("GET", "/hdr/a", {}, False),
        ("GET", "/hre/a", {"X-Ver": "v12"}, True),
        ("GET", "/hre/a", {"X-Ver": "v12-beta"}, False),
    ],
)
def test_match_rules(
    client: httpx.Client,
    egress_env: Env,
    method: str,
    path: str,
    headers: dict[str, str],
    allowed: bool,
) -> None:
    r = client.request(method, url(egress_env, "match.upstream.test", path), headers=headers)
    if allowed:
        assert r.status_code == 200, r.text
        assert r.json()["path"] == path
    else:
        assert r.status_code == 403
        assert "rule: no-match" in r.text


def test_dot_segments_cannot_escape_a_prefix(curl: Curl, egress_env: Env) -> None:
    for path in ("/v1/../admin", "/v1/%2e%2e/admin", "/v1%2F..%2Fadmin"):
        r = curl(url(egress_env, "match.upstream.test", path), "--path-as-is")
        body, status = body_status(r)
        assert status == 403, path
        assert "path-not-normalized" in body or "no-match" in body


def _tunnel(egress: EgressProcess, env: Env, connect: str, sni: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", egress.port), timeout=10)
    raw.sendall(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=str(env.ca.agent_cert))
    return ctx.wrap_socket(raw, server_hostname=sni)


def _send(sock: ssl.SSLSocket, host: str) -> bytes:
    sock.sendall(f"GET /v1/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize(
    ("connect", "sni", "host"),
    [
        ("api.upstream.test", "api.upstream.test", "unlisted.upstream.test"),
        ("api.upstream.test", "api.upstream.test", "noauth.upstream.test"),
        ("api.upstream.test", "noauth.upstream.test", "api.upstream.test"),
        ("noauth.upstream.test", "api.upstream.test", "api.upstream.test"),
    ],
)
def test_sni_host_and_connect_target_must_agree(
    egress: EgressProcess, egress_env: Env, connect: str, sni: str, host: str
) -> None:
    port = egress_env.upstream.https_port
    before = len(egress_env.upstream.seen)
    with _tunnel(egress, egress_env, f"{connect}:{port}", sni) as sock:
        reply = _send(sock, f"{host}:{port}")
    assert reply.startswith(b"HTTP/1.1 403")
    assert b"host-mismatch" in reply or b"host-not-allowed" in reply
    assert len(egress_env.upstream.seen) == before


def test_consistent_names_in_a_raw_tunnel_pass(egress: EgressProcess, egress_env: Env) -> None:
    port = egress_env.upstream.https_port
    with _tunnel(egress, egress_env, f"api.upstream.test:{port}", "api.upstream.test") as sock:
        reply = _send(sock, f"api.upstream.test:{port}")
    assert reply.startswith(b"HTTP/1.1 200")


def test_websocket_upgrade_refused_by_default(client: httpx.Client, egress_env: Env) -> None:
    ws_headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    r = client.get(url(egress_env, "noauth.upstream.test", "/ws"), headers=ws_headers)
    assert r.status_code == 403 and "websocket-not-enabled" in r.text
    # The opted-in route forwards the upgrade to the upstream (which declines it).
    r = client.get(url(egress_env, "ws.upstream.test", "/ws"), headers=ws_headers)
    assert r.status_code == 200
    assert r.json()["headers"]["upgrade"] == "websocket"


def test_other_protocol_upgrades_are_refused(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(
        url(egress_env, "ws.upstream.test"), headers={"Connection": "Upgrade", "Upgrade": "h2c"}
    )
    assert r.status_code == 403 and "upgrade-refused" in r.text


def _git_env(egress: EgressProcess, env: Env) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(env.tmp),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "https_proxy": egress.proxy_url,
        "GIT_SSL_CAINFO": str(env.ca.agent_cert),
    }


def _git(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def test_git_clone_allowed_with_fetch_and_push_refused(
    egress: EgressProcess, egress_env: Env, tmp_path: Path
) -> None:
    env = _git_env(egress, egress_env)
    remote = url(egress_env, "git.upstream.test", "/git/repo.git")
    r = _git(["clone", "-q", remote, str(tmp_path / "c")], env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c" / "README").read_text() == "hello\n"
    work = tmp_path / "c"
    (work / "new").write_text("x\n")
    _git(["add", "new"], env, work)
    _git(["-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "x"], env, work)
    before = [s["path"] for s in egress_env.upstream.seen]
    r = _git(["push", "origin", "HEAD:main"], env, work)
    assert r.returncode != 0
    assert "403" in r.stderr
    seen = [s["path"] for s in egress_env.upstream.seen][len(before) :]
    assert not [p for p in seen if "receive-pack" in p]


def test_git_clone_refused_without_fetch(
    egress: EgressProcess, egress_env: Env, tmp_path: Path
) -> None:
    env = _git_env(egress, egress_env)
    remote = url(egress_env, "nogit.upstream.test", "/git/repo.git")
    r = _git(["clone", "-q", remote, str(tmp_path / "c")], env)
    assert r.returncode != 0
    assert "403" in r.stderr


def test_receive_pack_post_is_refused_even_on_fetch_route(
    client: httpx.Client, egress_env: Env
) -> None:
    for path in (
        "/git/repo.git/git-receive-pack",
        "/git/repo.git/info/refs?service=git-receive-pack",
    ):
        r = client.post(url(egress_env, "git.upstream.test", path), content=b"0000")
        assert r.status_code == 403 and "rule: git-push" in r.text


def test_introspection_lists_routes_without_tokens(curl: Curl) -> None:
    body, status = body_status(curl("http://_egress.local/routes"))
    assert status == 200
    doc = json.loads(body)
    hosts = {r["host"]: r for r in doc["routes"]}
    assert hosts["api.upstream.test"]["auth"] == {"scheme": "Bearer", "injected": True}
    assert hosts["match.upstream.test"]["matches"][0]["paths"][0]["value"] == "/v1"
    assert API_TOKEN not in body and MATCH_TOKEN not in body
    assert "EGRESS_TOKEN" not in body


def test_introspection_over_https(client: httpx.Client) -> None:
    r = client.get("https://_egress.local/routes")
    assert r.status_code == 200 and API_TOKEN not in r.text


def test_outbound_dlp_finding_blocks_request(client: httpx.Client, egress_env: Env) -> None:
    before = len(egress_env.upstream.seen)
    r = client.post(url(egress_env, "dlp.upstream.test", "/upload"), content=b"data LEAKME data")
    assert r.status_code == 403 and "dlp-outbound" in r.text
    assert "LEAKME" not in r.text
    assert len(egress_env.upstream.seen) == before
    r = client.post(url(egress_env, "dlp.upstream.test", "/upload"), content=b"clean data")
    assert r.status_code == 200 and r.json()["body_len"] == 10


def test_addon_exception_refuses_request_and_daemon_keeps_serving(
    client: httpx.Client, egress: EgressProcess, egress_env: Env
) -> None:
    before = len(egress_env.upstream.seen)
    r = client.post(url(egress_env, "dlp.upstream.test", "/x"), content=b"BADFINDING")
    assert r.status_code == 403 and "internal-error" in r.text
    assert len(egress_env.upstream.seen) == before
    egress.wait_for("internal error; request refused")
    r = client.post(url(egress_env, "dlp.upstream.test", "/x"), content=b"fine")
    assert r.status_code == 200


def test_detector_that_raises_refuses_the_request(client: httpx.Client, egress_env: Env) -> None:
    # Fail closed: a detector error is a blocking finding, its text not shown.
    before = len(egress_env.upstream.seen)
    r = client.post(url(egress_env, "dlp.upstream.test", "/x"), content=b"BOOM")
    assert r.status_code == 403 and "boom/detector-error" in r.text
    assert "exploded" not in r.text
    assert len(egress_env.upstream.seen) == before


def test_inbound_dlp_finding_cuts_the_response(
    client: httpx.Client, egress: EgressProcess, egress_env: Env
) -> None:
    # The upstream echo carries the marker in its body. The headers are already
    # on their way when the body is scanned, so the proxy withholds the body and
    # closes the connection: the client gets a truncated message, never the text.
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url(egress_env, "dlp.upstream.test", "/say?EVIL-INSTRUCTION"))
    # The daemon is shared: earlier tests' refusals are in the log too, and
    # this one's line may be read after the client's error. settle() waits
    # until every line written so far has been read.
    egress.settle()
    assert any(r.get("rule") == "dlp-inbound" for r in egress.records()), egress.records()[-3:]
    r = client.get(url(egress_env, "dlp.upstream.test", "/say?harmless"))
    assert r.status_code == 200


def test_leaf_certificates_chain_to_the_bottle_ca_strictly(
    egress: EgressProcess, egress_env: Env
) -> None:
    # cryptography's verifier is RFC 5280-strict (AKI must match the CA's SKI).
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    port = egress_env.upstream.https_port
    with _tunnel(egress, egress_env, f"api.upstream.test:{port}", "api.upstream.test") as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    leaf = x509.load_der_x509_certificate(der)
    ca = x509.load_pem_x509_certificate(egress_env.ca.agent_cert.read_bytes())
    verifier = (
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("api.upstream.test"))
    )
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca


def test_http2_requests_are_judged_on_authority(curl: Curl, egress_env: Env) -> None:
    target = url(egress_env, "api.upstream.test", "/v1/x")
    r = curl(target, "--http2", "-H", "Authorization: Bearer agent-own")
    body, status = body_status(r)
    assert status == 200 and json.loads(body)["headers"]["authorization"] == auth_digest(
        f"Bearer {API_TOKEN}"
    )
    body, status = body_status(curl(target, "--http2", "-H", "Host: unlisted.upstream.test"))
    assert status == 403 and "host-mismatch" in body


def test_outbound_dlp_scans_url_and_headers_too(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(url(egress_env, "dlp.upstream.test", "/x?q=LEAKME"))
    assert r.status_code == 403 and "dlp-outbound" in r.text
    r = client.get(url(egress_env, "dlp.upstream.test", "/x"), headers={"X-Note": "LEAKME"})
    assert r.status_code == 403 and "dlp-outbound" in r.text


def test_inbound_dlp_route_asks_upstream_for_identity_encoding(
    client: httpx.Client, egress_env: Env
) -> None:
    r = client.get(url(egress_env, "dlp.upstream.test", "/v1"), headers={"Accept-Encoding": "br"})
    assert r.json()["headers"]["accept-encoding"] == "identity"


def test_inbound_dlp_decodes_gzip_before_scanning(client: httpx.Client, egress_env: Env) -> None:
    r = client.get(url(egress_env, "dlp.upstream.test", "/gz?harmless-"))
    assert r.status_code == 200 and r.text.startswith("harmless-")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url(egress_env, "dlp.upstream.test", "/gz?EVIL-INSTRUCTION-"))


def test_oversized_body_on_a_scanned_route_is_refused(
    client: httpx.Client, egress_env: Env
) -> None:
    from bot_bottle_sidecars.egress.addon import MAX_SCANNED_BODY

    r = client.post(
        url(egress_env, "dlp.upstream.test", "/upload"), content=b"x" * (MAX_SCANNED_BODY + 1)
    )
    assert r.status_code == 413 and "body-too-large" in r.text


def test_non_http_bytes_in_an_allowed_tunnel_never_reach_the_upstream(
    egress: EgressProcess, egress_env: Env
) -> None:
    before = egress_env.upstream.connections
    port = egress_env.upstream.http_port
    with socket.create_connection(("127.0.0.1", egress.port), timeout=10) as raw:
        raw.sendall(f"CONNECT api.upstream.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert raw.recv(4096).startswith(b"HTTP/1.1 200")
        raw.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(range(256)) * 4)
        # mitmproxy either answers with an HTTP error or waits for more; either
        # way nothing may be relayed. Give it a moment, then look at the upstream.
        raw.settimeout(2)
        reply = b""
        try:
            while chunk := raw.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert not reply.startswith(b"SSH-")
    assert egress_env.upstream.connections == before


@pytest.mark.parametrize(
    "raw",
    [
        b"GET http://api.upstream.test:99999/ HTTP/1.1\r\nHost: api.upstream.test:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET http://[::1/ HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET http://api.upstream.test/ HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"CONNECT :443 HTTP/1.1\r\n\r\n",
        b"GET http://api.upstream.test/ HTTP/1.1\r\nHost: api.upstream.test\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ],
    ids=[
        "bad-port",
        "no-host",
        "bad-ipv6",
        "nul-in-host",
        "empty-connect",
        "smuggling",
        "tls-junk",
    ],
)
def test_malformed_requests_get_an_error_and_the_daemon_keeps_serving(
    egress: EgressProcess, egress_env: Env, client: httpx.Client, raw: bytes
) -> None:
    before = egress_env.upstream.connections
    with socket.create_connection(("127.0.0.1", egress.port), timeout=5) as sock:
        sock.sendall(raw)
        sock.settimeout(1.5)
        try:
            reply = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            reply = b""
    assert reply == b"" or reply.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5", b"HTTP/1.0 4"))
    assert egress_env.upstream.connections == before
    assert client.get(url(egress_env, "noauth.upstream.test")).status_code == 200


def _websocket(egress: EgressProcess, env: Env, host: str) -> ssl.SSLSocket:
    port = env.upstream.https_port
    sock = _tunnel(egress, env, f"{host}:{port}", host)
    sock.sendall(
        f"GET /wsecho HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_websocket_on_opted_in_route_relays_messages(
    egress: EgressProcess, egress_env: Env
) -> None:
    with _websocket(egress, egress_env, "ws.upstream.test") as sock:
        reader = sock.makefile("rb")
        for i in range(200):
            sock.sendall(ws_frame(0x1, f"hello {i}".encode(), mask=True))
            assert ws_read_frame(reader) == (0x1, f"hello {i}".encode())
        sock.sendall(ws_frame(0x8, b"", mask=True))


def test_websocket_messages_are_scanned_both_ways(egress: EgressProcess, egress_env: Env) -> None:
    with _websocket(egress, egress_env, "dlp.upstream.test") as sock:
        reader = sock.makefile("rb")
        # Outbound finding: never reaches the upstream (so no echo).
        sock.sendall(ws_frame(0x1, b"my LEAKME", mask=True))
        # Inbound finding: the upstream echoes it, the proxy drops the echo.
        sock.sendall(ws_frame(0x1, b"EVIL-INSTRUCTION", mask=True))
        sock.sendall(ws_frame(0x1, b"fine", mask=True))
        assert ws_read_frame(reader) == (0x1, b"fine")
    wanted = {"dlp-websocket-outbound", "dlp-websocket-inbound"}
    deadline = time.monotonic() + 10  # the log pump thread may lag behind
    while not wanted <= {r.get("rule") for r in egress.records()}:
        assert time.monotonic() < deadline, egress.lines[-5:]
        time.sleep(0.02)
