"""The supervise MCP server (streamable HTTP, official ``mcp`` SDK).

Tools:

* ``list-egress-routes``: the live egress routes, read from the egress
  daemon's introspection endpoint (secret-looking fields are redacted again
  here, in case a future egress version leaks one).
* ``capability-block``: propose a Dockerfile change with a justification. The
  proposal is written atomically to the bottle's host-side queue and the call
  returns at once with ``status: pending`` -- MCP clients cut tool calls at
  about 60 s, so nothing here waits for a human.
* ``egress-request``: ask the operator to let this bottle reach one more host
  (optionally only some path prefixes and methods). Wildcards, IP literals,
  ports other than 443/80 and the bottle's credential routes are refused
  here; approved, the route is applied live (no restart).
* ``capability-status``: poll a proposal's status and, once decided, the
  operator's answer (for either kind of proposal).

HTTP hardening in front of the SDK: a body over 1 MiB gets 413 before it is
read, a missing-or-malformed ``Content-Length`` value gets 400. Malformed
JSON-RPC is answered by the SDK with a JSON-RPC error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bot_bottle.contracts.supervise import (
    CapabilityBlockPayload,
    EgressRoutePayload,
    Proposal,
    QueueError,
    SuperviseQueue,
    check_proposal_id,
)
from bot_bottle.errors import BotBottleError
from bot_bottle.log import configure_logging, get_logger
from bot_bottle_sidecars import __version__
from bot_bottle_sidecars.init.plan import LISTEN_FD_ENV

MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PORT = 8765
MCP_PATH = "/mcp"
INTROSPECTION_TIMEOUT = 5.0
_SECRETISH = re.compile(r"token|secret|passw|authoriz|credential|api[_-]?key|cookie", re.I)

log = get_logger("supervise")

# What the agent should do next, so a model reading the result need not guess.
_STATUS_MESSAGES = {
    "pending": "Waiting for the operator. Carry on with other work and poll again later.",
    "approved": "Approved (see 'dockerfile' if the operator edited it). The change takes "
    "effect when the operator commits and resumes the bottle.",
    "rejected": "Rejected; see the operator's comment. Do not propose the same change again.",
}


@dataclass(frozen=True)
class SuperviseConfig:
    queue_dir: Path
    bottle_slug: str
    #: URL of the egress daemon's route listing; None when egress is not running.
    egress_introspection_url: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 -- serves the bottle's internal network
    port: int = DEFAULT_PORT
    #: Host header values to accept (DNS-rebinding protection); empty accepts any,
    #: which is right on a per-bottle internal network no browser can reach.
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)


def redact(value: Any) -> Any:
    """Replace values under secret-looking keys, recursively."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if _SECRETISH.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _fetch_json(url: str) -> Any:
    # No proxy: the egress daemon is a sibling in the same container.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=INTROSPECTION_TIMEOUT) as resp:
        return json.loads(resp.read(MAX_BODY_BYTES + 1)[:MAX_BODY_BYTES])


def build_server(config: SuperviseConfig) -> MCPServer:
    queue = SuperviseQueue(config.queue_dir, config.bottle_slug)
    server: MCPServer = MCPServer(
        "bot-bottle-supervise",
        version=__version__,
        instructions=(
            "Ask the human operator for help when the bottle blocks you. "
            "list-egress-routes shows which hosts you may reach; egress-request asks for one "
            "more host (pending until the operator answers). capability-block proposes "
            "a Dockerfile change (e.g. a missing tool) with a justification; it returns a "
            "proposal_id at once with status 'pending'. Poll capability-status with that id "
            "now and then (not in a tight loop); the operator approves, edits or rejects it."
        ),
    )

    @server.tool(
        name="list-egress-routes",
        description="List the hosts (and path/method rules) this bottle may reach. No secrets.",
    )
    async def list_egress_routes() -> dict[str, Any]:
        url = config.egress_introspection_url
        if not url:
            raise ToolError("egress is not running in this bottle, so there are no routes to list")
        try:
            data = await anyio.to_thread.run_sync(_fetch_json, url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("egress_introspection_failed", url=url, error=str(exc))
            raise ToolError(
                "could not read the egress route table (the egress daemon may be restarting); "
                "try again in a few seconds"
            ) from exc
        routes = data.get("routes", data) if isinstance(data, dict) else data
        return {"routes": redact(routes)}

    async def _submit(payload: CapabilityBlockPayload | EgressRoutePayload) -> Proposal:
        """Queue ``payload`` for the operator; a refusal (queue full, …) is
        the tool's error."""
        try:
            proposal = await anyio.to_thread.run_sync(queue.submit, payload)
        except QueueError as exc:
            log.error("proposal_refused", error=exc.message)
            raise ToolError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from exc
        log.info("proposal_submitted", proposal_id=proposal.id, tool=proposal.tool)
        return proposal

    @server.tool(
        name="capability-block",
        description=(
            "Propose a Dockerfile change for this bottle (e.g. install a missing tool), with a "
            "justification for the human operator. Returns immediately with a proposal_id and "
            "status 'pending'; poll capability-status for the decision."
        ),
    )
    async def capability_block(dockerfile: str, justification: str) -> dict[str, Any]:
        try:
            payload = CapabilityBlockPayload(dockerfile=dockerfile, justification=justification)
        except ValueError as exc:
            raise ToolError(f"invalid proposal: {_first_error(exc)}") from exc
        proposal = await _submit(payload)
        return {
            "proposal_id": proposal.id,
            "status": "pending",
            "message": "Proposal queued for the operator. Poll capability-status with this id.",
        }

    @server.tool(
        name="egress-request",
        description=(
            "Ask the human operator to let this bottle reach one more host, e.g. a package "
            "registry or an API you need. Give the exact host name (no wildcard, no IP), "
            "optionally ports (443 and/or 80), path prefixes and HTTP methods to narrow it, "
            "and a justification. Returns at once with a proposal_id and status 'pending'; "
            "poll capability-status. Approved, the host is reachable without a restart."
        ),
    )
    async def egress_request(
        host: str,
        justification: str,
        ports: list[int] | None = None,
        paths: list[str] | None = None,
        methods: list[str] | None = None,
    ) -> dict[str, Any]:
        try:
            payload = EgressRoutePayload(
                host=host,
                justification=justification,
                ports=tuple(ports or ()),
                paths=tuple(paths or ()),
                methods=tuple(methods or ()),
            )
        except ValueError as exc:
            raise ToolError(f"invalid egress request: {_first_error(exc)}") from exc
        await _refuse_credential_route(payload.host)
        proposal = await _submit(payload)
        return {
            "proposal_id": proposal.id,
            "status": "pending",
            "host": payload.host,
            "message": "Request queued for the operator. Poll capability-status with this id; "
            "once approved, retry your request (no restart needed).",
        }

    async def _refuse_credential_route(host: str) -> None:
        """A host whose route injects a credential is the operator's: a
        proposal could only widen what the credential is sent with."""
        url = config.egress_introspection_url
        if not url:
            return
        try:
            data = await anyio.to_thread.run_sync(_fetch_json, url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # Fail closed: without the table the check cannot be made.
            raise ToolError(
                "could not read the egress route table to check the request; "
                "try again in a few seconds"
            ) from exc
        routes = data.get("routes", []) if isinstance(data, dict) else []
        for route in routes:
            if isinstance(route, dict) and route.get("host") == host and route.get("auth"):
                raise ToolError(
                    f"{host} is a credential route of this bottle; its rules are the "
                    "operator's to change (ask in your own words through capability-block "
                    "only if you must)"
                )

    @server.tool(
        name="capability-status",
        description="Status of a capability-block or egress-request proposal: pending, "
        "approved or rejected, with the operator's comment, what the approval did, and (if "
        "they edited it) the final Dockerfile or route.",
    )
    async def capability_status(proposal_id: str) -> dict[str, Any]:
        try:
            check_proposal_id(proposal_id)
            state = await anyio.to_thread.run_sync(queue.state, proposal_id)
        except QueueError as exc:
            raise ToolError(exc.message + (f" ({exc.hint})" if exc.hint else "")) from exc
        result: dict[str, Any] = {
            "proposal_id": state.proposal_id,
            "status": state.status.value,
            "message": _STATUS_MESSAGES[state.status.value],
        }
        if state.response is not None:
            result["comment"] = state.response.comment
            result["decided_at"] = state.response.decided_at.isoformat()
            if state.response.effect:
                result["message"] = state.response.effect
            if state.response.dockerfile is not None:
                result["dockerfile"] = state.response.dockerfile
            if state.response.route is not None:
                result["route"] = state.response.route
        return result

    @server.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return server


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}"
    return str(exc)


class RequestGuard:
    """Refuse bad bodies before the SDK parses anything.

    The SDK caps bodies too (it counts chunked bodies while reading); this layer
    answers a declared oversize length with 413 without reading it, and a
    Content-Length that is not one non-negative integer with 400 -- the SDK
    would otherwise ignore a garbled header.
    """

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            values = {v.strip() for k, v in scope["headers"] if k.lower() == b"content-length"}
            if values:
                if len(values) > 1 or not next(iter(values)).isdigit():
                    log.warning("bad_content_length", path=scope.get("path"))
                    await _refuse(400, "bad Content-Length header")(scope, receive, send)
                    return
                if int(next(iter(values))) > self.max_body:
                    log.warning("body_too_large", path=scope.get("path"))
                    await _refuse(413, f"request body over {self.max_body} bytes")(
                        scope, receive, send
                    )
                    return
        await self.app(scope, receive, send)


def _refuse(status: int, message: str) -> JSONResponse:
    # A JSON-RPC shaped body so an MCP client shows the reason, not just a status.
    return JSONResponse(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}},
        status_code=status,
        headers={"connection": "close"},
    )


def build_app(config: SuperviseConfig) -> ASGIApp:
    server = build_server(config)
    security = (
        TransportSecuritySettings(allowed_hosts=list(config.allowed_hosts))
        if config.allowed_hosts
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        # Stateless JSON responses: a restarted supervise keeps serving an agent
        # whose client still holds an old session, and nothing idles open
        # through a proxy that times out quiet streams.
        stateless_http=True,
        json_response=True,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=security,
        host=config.host,
    )
    return RequestGuard(app)


def parse_args(argv: list[str] | None) -> SuperviseConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bot_bottle_sidecars.supervise",
        description="The bot-bottle supervise MCP server.",
    )
    parser.add_argument("--queue-dir", type=Path, required=True)
    parser.add_argument("--bottle-slug", required=True)
    parser.add_argument("--egress-introspection-url")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--allowed-host", action="append", default=[])
    args = parser.parse_args(argv)
    return SuperviseConfig(
        queue_dir=args.queue_dir,
        bottle_slug=args.bottle_slug,
        egress_introspection_url=args.egress_introspection_url,
        host=args.host,
        port=args.port,
        allowed_hosts=tuple(args.allowed_host),
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    config = parse_args(argv)
    try:
        app = build_app(config)
    except BotBottleError as exc:
        configure_logging("json")
        log.error("supervise_config_invalid", error=exc.message, hint=exc.hint)
        return 2
    # After the SDK configured stdlib logging its way: JSON lines for everything.
    configure_logging("json")
    log.info("supervise_listening", host=config.host, port=config.port, path=MCP_PATH)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_config=None,
            access_log=False,
            # Idle keep-alive connections are cheap to reopen; keep few around.
            timeout_keep_alive=5,
        )
    )
    # Started on demand, init hands over the socket the first client is
    # waiting on (bot_bottle_sidecars.init: on_demand); a restart binds.
    inherited = os.environ.pop(LISTEN_FD_ENV, "")
    server.run(sockets=[socket.socket(fileno=int(inherited))] if inherited.isdigit() else None)
    return 0
