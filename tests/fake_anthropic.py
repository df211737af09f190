"""A local HTTPS server playing the Anthropic Messages API (the subset
``claude -p`` uses), recording every request it receives.

``POST /v1/messages`` answers with a streamed (SSE) or plain message whose
text is ``reply``; every other path gets a 404 JSON error, which Claude
Code tolerates for its optional calls. With :attr:`FakeAnthropic.tool_call`
set, a request that offers that tool and carries no tool result yet is
answered with a ``tool_use`` of it instead, so a test can watch the client
call a tool (an MCP server's) and send the result back. The certificate is issued by a CA the
test generates, for the host names given.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from bot_bottle_testkit.egress import make_test_pki, serve_tls


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeAnthropic:
    port: int
    ca_pem: Path
    requests: list[Seen] = field(default_factory=list)
    #: (tool name, input) to ask the client to call, or None.
    tool_call: tuple[str, dict[str, Any]] | None = None

    def messages(self) -> list[Seen]:
        return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]


def _tool_events(
    tool_id: str, name: str, args: dict[str, Any], model: str
) -> list[tuple[str, dict[str, Any]]]:
    message = {
        "id": f"msg_{tool_id}", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }  # fmt: skip
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    return [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": block}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta",
                                           "partial_json": json.dumps(args)}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


SEARCH_ID = "toolu_fake_search"
CALL_ID = "toolu_fake_call"


def _tool_step(
    request: dict[str, Any], name: str, args: dict[str, Any], model: str
) -> list[tuple[str, dict[str, Any]]] | None:
    """What a model that wants tool ``name`` answers next, or None (text).

    Claude Code defers MCP tools: only their names are in the prompt until
    the model fetches their schemas with ``ToolSearch`` ("select:<name>").
    So: search for the tool if it is deferred, call it once it is loaded,
    and answer in text once its result is in the conversation."""
    text = json.dumps(request.get("messages", []))
    if f'"tool_use_id": "{CALL_ID}"' in text:
        return None  # the tool's result is back
    offered = {t.get("name") for t in request.get("tools") or [] if isinstance(t, dict)}
    if name in offered and CALL_ID not in text:
        return _tool_events(CALL_ID, name, args, model)
    if "ToolSearch" in offered and SEARCH_ID not in text:
        return _tool_events(SEARCH_ID, "ToolSearch", {"query": f"select:{name}"}, model)
    return None


def _events(reply: str, model: str) -> list[tuple[str, dict[str, Any]]]:
    message = {
        "id": "msg_fake_01", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    }  # fmt: skip
    return [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": reply}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip


@contextmanager
def fake_anthropic(
    tmp: Path, *, hosts: Sequence[str], reply: str, bind: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeAnthropic]:
    # One throwaway CA and server certificate, as the egress tests make them.
    pki = make_test_pki(tmp, hosts)
    ca_path, cert_path, key_path = pki.ca_cert, pki.server_cert, pki.server_key
    state = FakeAnthropic(port=0, ca_pem=ca_path)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _record(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                state.requests.append(Seen(self.command, self.path, headers, body))
            return body

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "-"}})

        def do_GET(self) -> None:
            self._record()
            if self.path.split("?")[0] == "/v1/echo":
                # A reflecting endpoint: the request's headers, credential included.
                self._json(200, {"headers": {k.lower(): v for k, v in self.headers.items()}})
                return
            self._not_found()

        def do_POST(self) -> None:
            body = self._record()
            if self.path.split("?")[0] != "/v1/messages":
                self._not_found()
                return
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                request = {}
            model = str(request.get("model", "claude-test"))
            events = _events(reply, model)
            tool = state.tool_call
            step = _tool_step(request, tool[0], tool[1], model) if tool is not None else None
            events = step or events
            if not request.get("stream"):
                message = dict(events[0][1]["message"])
                message.update(content=[{"type": "text", "text": reply}],
                               stop_reason="end_turn")  # fmt: skip
                self._json(200, message)
                return
            payload = "".join(
                f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serve_tls(Handler, cert_path, key_path, bind=bind, port=port) as server:
        state.port = server.server_address[1]
        yield state
