"""The egress decision, free of mitmproxy: facts about a request in, a verdict out.

Deny by default: no request reaches an upstream without matching a route.
Every refusal names a rule and says what the agent can do, because the 403
body is all the agent gets to read.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from bot_bottle.egress.config import EgressConfig, Route, is_ip_literal

ASK = (
    "List the allowed routes with the supervise MCP tool `list-egress-routes` "
    "(or GET http://{introspection}/routes through the proxy). If the task needs "
    "this, stop and ask the operator through the supervise MCP server, saying "
    "which host/path you need and why; do not try to work around the proxy."
)


#: Methods whose answer is the request itself (TRACK: IIS's TRACE).
_REFLECTING_METHODS = frozenset({"TRACE", "TRACK"})


@dataclass(frozen=True)
class Refusal:
    rule: str
    reason: str
    #: What the agent can do about it, beyond the generic advice.
    hint: str = ""


@dataclass(frozen=True)
class RequestFacts:
    """What the proxy knows about one HTTP request."""

    scheme: str
    #: Destination mitmproxy would connect to (absolute-form URL, or the Host
    #: header inside a tunnel).
    host: str
    port: int
    method: str
    #: The raw path without the query string.
    path: str
    query: str
    #: Lower-cased header names -> every value.
    headers: dict[str, list[str]]
    #: ``Host`` header (HTTP/1) or ``:authority`` (HTTP/2), as sent.
    authority: str | None
    #: TLS SNI the client sent, if the client side is TLS.
    sni: str | None
    #: The CONNECT target of the tunnel this request came through.
    connect_target: tuple[str, int] | None


def _norm(host: str) -> str:
    return host.strip().rstrip(".").lower()


def split_authority(authority: str, default_port: int) -> tuple[str, int | None]:
    """``host[:port]`` / ``[v6]:port`` -> (host, port or None). Bad ports give -1."""
    a = authority.strip()
    if a.startswith("["):
        end = a.find("]")
        host, rest = (a[1:end], a[end + 1 :]) if end != -1 else (a, "")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif a.count(":") == 1:
        host, port_s = a.split(":", 1)
    else:
        host, port_s = a, ""
    if not port_s:
        return host, None
    return host, int(port_s) if port_s.isdigit() and 0 < int(port_s) < 65536 else -1


#: ``is_ip_literal`` parses the host with ``ipaddress`` (an exception for
#: every host name) on each request; it depends on the string alone, and a
#: bottle's traffic goes to a handful of hosts.
_is_ip_literal = functools.lru_cache(maxsize=1024)(is_ip_literal)


def check_destination(config: EgressConfig, host: str, port: int) -> Route | Refusal:
    """Host and port alone (CONNECT, and every request)."""
    h = _norm(host)
    if _is_ip_literal(h):
        return Refusal(
            "ip-literal",
            f"{host} is an IP address; egress only reaches declared host names",
            "Use the service's host name.",
        )
    route = config.route_for(h)
    if route is None:
        return Refusal(
            "host-not-allowed",
            f"{h} is not an allowed egress host (deny by default)",
        )
    if port not in route.allowed_ports:
        ports = ", ".join(str(p) for p in route.allowed_ports)
        return Refusal(
            "port-not-allowed",
            f"port {port} is not allowed for {h} (allowed: {ports})",
        )
    return route


def check_request(config: EgressConfig, req: RequestFacts) -> Route | Refusal:
    """The full decision for one request (after any CONNECT was accepted)."""
    dest = check_destination(config, req.host, req.port)
    if isinstance(dest, Refusal):
        return dest
    route = dest
    if req.method.upper() in _REFLECTING_METHODS:
        # TRACE echoes the request as the upstream got it: the injected
        # credential included, straight back to the agent.
        return Refusal(
            "method-not-allowed",
            f"{req.method.upper()} reflects the request (and the credential the proxy adds) "
            "back to the client; it is refused on every route",
        )
    if "#" in req.path or "#" in req.query:
        # A fragment never belongs in a request target, but mitmproxy forwards
        # it; scanners and rules that parse the URL would stop at the '#'
        # while the upstream reads (and logs) what follows.
        return Refusal(
            "bad-request-target",
            "the request target contains '#' (a URL fragment is never sent to a server)",
            "Drop the '#...' part, or percent-encode it as %23.",
        )
    coding = ",".join(req.headers.get("transfer-encoding", [])).replace(" ", "").lower()
    if coding not in ("", "chunked"):
        # mitmproxy undoes only the chunking: the outbound scan would read
        # the body still gzip- or deflate-coded, the upstream decoded.
        return Refusal(
            "transfer-coding",
            f"request Transfer-Encoding {coding!r} is not allowed (only chunked)",
            "Send the body uncompressed, or with Content-Encoding.",
        )
    fronting = _check_names(req)
    if fronting is not None:
        return fronting
    if route.auth is not None and req.scheme != "https" and not route.ports:
        # The route's credential would cross the network in clear text (e.g.
        # http://api.example.com/ on port 80, or plain HTTP in a tunnel to
        # 443). A route that lists its ports explicitly has opted in.
        return Refusal(
            "credential-needs-tls",
            f"{route.host} gets the route's credential, which is sent over HTTPS only",
            f"Use https://{route.host}/.",
        )
    upgrade = ",".join(req.headers.get("upgrade", [])).strip().lower()
    if upgrade:
        if upgrade != "websocket":
            return Refusal("upgrade-refused", f"protocol upgrade to {upgrade!r} is not allowed")
        if not route.websocket:
            return Refusal(
                "websocket-not-enabled",
                f"WebSocket upgrades are not enabled for {route.host}",
            )
    git = _check_git(route, req)
    if git is not None:
        return git
    if route.matches:
        if _has_dot_segment(req.path):
            return Refusal(
                "path-not-normalized",
                f"path {req.path!r} contains '.' or '..' segments",
                "Send the normalized path.",
            )
        if not any(m.matches(req.method, req.path, req.headers) for m in route.matches):
            return Refusal(
                "no-match",
                f"{req.method} {req.path} on {route.host} matches none of the route's "
                "allowed paths/methods/headers",
            )
    return route


def _check_names(req: RequestFacts) -> Refusal | None:
    """SNI, Host/:authority, the request target and the CONNECT target must name
    one host (and one port): otherwise a tunnel opened for an allowed host could
    carry a request for another one (domain fronting)."""
    names = {"request": (_norm(req.host), req.port)}
    default_port = 443 if req.scheme == "https" else 80
    authorities = ([req.authority] if req.authority is not None else []) + req.headers.get(
        "host", []
    )
    if not authorities:
        return Refusal("missing-host", "the request has no Host header")
    for i, authority in enumerate(dict.fromkeys(authorities)):
        host, port = split_authority(authority, default_port)
        key = "Host header" if i == 0 else f"Host header #{i + 1}"
        names[key] = (_norm(host), port if port is not None else default_port)
    if req.connect_target is not None:
        names["CONNECT target"] = (_norm(req.connect_target[0]), req.connect_target[1])
    hosts = {h for h, _ in names.values()}
    if req.sni is not None:
        hosts.add(_norm(req.sni))
    ports = {p for _, p in names.values()}
    if len(hosts) > 1 or len(ports) > 1:
        detail = ", ".join(f"{k}={h}:{p}" for k, (h, p) in names.items())
        if req.sni is not None:
            detail += f", SNI={req.sni}"
        return Refusal(
            "host-mismatch",
            f"the TLS SNI, Host header and CONNECT target disagree ({detail})",
            "Send the request to the host you connected to.",
        )
    return None


def _check_git(route: Route, req: RequestFacts) -> Refusal | None:
    services = {v for k, v in parse_qsl(req.query, keep_blank_values=True) if k == "service"}
    path = unquote(req.path).rstrip("/")
    if path.endswith("/git-receive-pack") or "git-receive-pack" in services:
        return Refusal(
            "git-push",
            "git push over HTTP is refused on every route",
            "Push through the bottle's git remote (git-gate), which scans and forwards it.",
        )
    if (path.endswith("/git-upload-pack") or "git-upload-pack" in services) and not (
        route.git.fetch
    ):
        return Refusal(
            "git-fetch-not-enabled",
            f"git fetch/clone over HTTP is not enabled for {route.host}",
        )
    return None


def _has_dot_segment(path: str) -> bool:
    # Decode first: an encoded slash or dot ("%2F..%2F") must not hide a segment
    # from the check that an upstream might decode and collapse.
    decoded = unquote(unquote(path))
    return any(seg in (".", "..") for seg in re.split(r"[/\\]", decoded))


def refusal_body(refusal: Refusal, req_line: str, introspection_host: str) -> str:
    lines = [
        "bot-bottle egress refused this request.",
        f"rule: {refusal.rule}",
        f"reason: {refusal.reason}",
        f"request: {req_line}",
    ]
    if refusal.hint:
        lines.append(f"hint: {refusal.hint}")
    lines.append("what to do: " + ASK.format(introspection=introspection_host))
    return "\n".join(lines) + "\n"
