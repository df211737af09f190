"""The mitmproxy addon: every hook the egress decision needs, failing closed.

mitmproxy catches exceptions raised by addon hooks, logs them and carries on
with the flow, i.e. it would *forward* a request our code failed to judge.
Every hook here is therefore wrapped: an exception refuses the request (403),
kills the response, or refuses the upstream connection, and is logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mitmproxy import connection, ctx, http, tcp
from mitmproxy.proxy import server_hooks

from bot_bottle.contracts.dlp import Action, Finding, StreamScanner
from bot_bottle.egress.config import EgressConfig, Route
from bot_bottle.errors import BotBottleError
from bot_bottle.secrets import Secret
from bot_bottle_sidecars.egress import reflect, streams
from bot_bottle_sidecars.egress.dlp import TrafficScanner
from bot_bottle_sidecars.egress.eventlog import EventLog
from bot_bottle_sidecars.egress.policy import (
    Refusal,
    RequestFacts,
    check_destination,
    check_request,
    refusal_body,
)

_META = "bot_bottle_egress"
#: The bottle's other secrets (``?prompt`` answers, ``${HOST_VAR}`` values of
#: its env), given to this daemon only, for DLP's known_secrets detector.
KNOWN_SECRET_RE = re.compile(r"^EGRESS_SECRET_[0-9]+$")
#: Largest request body accepted on a route with outbound DLP (it is buffered
#: whole for the scan, whatever its framing: Content-Length, chunked, HTTP/2).
MAX_SCANNED_BODY = 32 << 20
#: Response chunks reach the scanner in slices of at most this many bytes, so
#: each scan window stays small (the pipeline scans what a slice inflates to
#: in pieces of about 1 MiB, and caps a compressed body's decoded total).
_FEED_BYTES = 16 << 10


@dataclass
class _FlowState:
    route: Route | None = None
    synthetic: bool = False
    # The Authorization value, added after the outbound scan (a Secret, so that
    # a repr of the flow's metadata never shows it).
    inject: Secret | None = None
    #: The token alone, searched for in the response (reflect.py).
    injected_token: Secret | None = None
    scan_body: bool = False
    #: The scanner that judged the headers judges the body (a reload between
    #: the two hooks must not let the body pass unscanned).
    scanner: TrafficScanner | None = None
    #: A DLP finding lies in the URL path: refusals and log lines show no path.
    withhold_path: bool = False
    #: ... or in the method (HTTP/1.1 takes any token as one).
    withhold_method: bool = False
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class LoadedConfig:
    config: EgressConfig
    tokens: Mapping[str, Secret]
    #: Values DLP must not let out besides the tokens (never injected anywhere).
    secrets: tuple[Secret, ...] = ()

    def known_secrets(self) -> tuple[Secret, ...]:
        return (*self.tokens.values(), *self.secrets)


ScannerFactory = Callable[[EgressConfig, tuple[Secret, ...]], TrafficScanner | None]
#: Given a config, prepare its upstream trust (may raise) and return the step
#: that puts it in effect.
TrustPreparer = Callable[[EgressConfig], Callable[[], None]]
_Prepared = tuple[LoadedConfig, TrafficScanner | None, Callable[[], None] | None]


def load_tokens(config: EgressConfig, environ: Mapping[str, str]) -> dict[str, Secret]:
    return {slot: Secret(environ[slot]) for slot in config.token_slots() if environ.get(slot)}


def load_known_secrets(environ: Mapping[str, str]) -> tuple[Secret, ...]:
    """The ``EGRESS_SECRET_<n>`` values, in slot order, held in memory only."""
    slots = [k for k in environ if KNOWN_SECRET_RE.match(k)]
    slots.sort(key=lambda k: int(k.rsplit("_", 1)[1]))
    return tuple(Secret(environ[k]) for k in slots if environ[k])


class EgressAddon:
    def __init__(
        self,
        config: EgressConfig,
        log: EventLog,
        *,
        scanner_factory: ScannerFactory | None = None,
        environ: Mapping[str, str] | None = None,
        trust: TrustPreparer | None = None,
    ) -> None:
        self.log = log
        self._environ = os.environ if environ is None else environ
        self._scanner_factory = scanner_factory
        self._trust = trust
        self._tunnels: dict[str, tuple[str, int]] = {}
        self.exit_code = 0
        #: Why the last reload was refused (None: it worked, or none yet).
        self.reload_error: str | None = None
        self._scanner: TrafficScanner | None = None
        self._reflection = reflect.Guards()
        self._activate(self._prepare(config))

    # -- config -----------------------------------------------------------------

    def _prepare(self, config: EgressConfig) -> _Prepared:
        """Everything that can fail, done before anything is swapped in."""
        loaded = LoadedConfig(
            config, load_tokens(config, self._environ), load_known_secrets(self._environ)
        )
        scanner = None
        if self._scanner_factory is not None:
            scanner = self._scanner_factory(config, loaded.known_secrets())
        commit_trust = self._trust(config) if self._trust is not None else None
        return loaded, scanner, commit_trust

    def _activate(self, prepared: _Prepared) -> None:
        # One event loop thread: requests see either the old or the new table.
        loaded, scanner, commit_trust = prepared
        if commit_trust is not None:
            commit_trust()
        self.loaded = loaded
        self._scanner = scanner
        self.log.level = loaded.config.log_level
        self.log.redact.set_secrets(t.reveal() for t in loaded.known_secrets())
        missing = [s for s in loaded.config.token_slots() if s not in loaded.tokens]
        if missing:
            self.log.error(
                "token slots missing from the environment",
                slots=missing,
                effect="requests on these routes are refused",
            )

    @property
    def config(self) -> EgressConfig:
        return self.loaded.config

    def reload(self, path: Path) -> bool:
        """Re-read ``path``; on any failure keep the current table and log why."""
        self.reload_error = None
        try:
            prepared = self._prepare(EgressConfig.load(path))
        except BotBottleError as exc:
            self.reload_error = exc.message
            self.log.error("reload failed; keeping the previous routes", error=exc.message)
            return False
        except Exception as exc:
            self.reload_error = f"{type(exc).__name__}: {exc}"
            self.log.error("reload failed; keeping the previous routes", error=self.reload_error)
            return False
        self._activate(prepared)
        self.log.info("reloaded", routes=[r.host for r in self.config.routes])
        return True

    def extra_hosts(self) -> Mapping[str, str]:
        return self.loaded.config.extra_hosts

    # -- failure handling ---------------------------------------------------------

    def _fail(self, where: str, exc: BaseException, **fields: Any) -> None:
        self.log.error(
            "internal error; request refused",
            hook=where,
            error=f"{type(exc).__name__}: {exc}",
            **fields,
        )

    def _path(self, flow: http.HTTPFlow) -> str:
        """The request's path for refusals and logs (never the query, nor a
        '#...' tail: such a request is refused before it is scanned)."""
        st = flow.metadata.get(_META)
        if st is not None and st.withhold_path:
            return "/[path withheld: it holds a DLP finding]"
        return flow.request.path.split("?", 1)[0].split("#", 1)[0]

    def _method(self, flow: http.HTTPFlow) -> str:
        st = flow.metadata.get(_META)
        if st is not None and st.withhold_method:
            return "[method withheld: it holds a DLP finding]"
        return flow.request.method

    def _refuse(self, flow: http.HTTPFlow, refusal: Refusal, status: int = 403) -> None:
        req = flow.request
        path = self._path(flow)
        host = req.pretty_host
        line = f"{self._method(flow)} {req.scheme}://{host}{path}"
        body = refusal_body(refusal, line, self.config.introspection_host)
        req.stream = False
        # No "100 Continue" for a request that is refused: the answer is final.
        req.headers.pop("Expect", None)
        flow.response = http.Response.make(
            status,
            body.encode(),
            {
                "Content-Type": "text/plain; charset=utf-8",
                "X-Bot-Bottle-Egress-Rule": refusal.rule,
                "Cache-Control": "no-store",
            },
        )
        self._state(flow).synthetic = True
        self.log.block(
            "refused",
            rule=refusal.rule,
            reason=refusal.reason,
            host=host,
            port=req.port,
            method=self._method(flow),
            path=path,
        )

    @staticmethod
    def _state(flow: http.HTTPFlow) -> _FlowState:
        st = flow.metadata.get(_META)
        if st is None:
            st = flow.metadata[_META] = _FlowState()
        return st

    # -- hooks ----------------------------------------------------------------------

    def running(self) -> None:
        c = self.config
        listen = [f"{h}:{p}" for h, p, *_ in _listen_addrs()]
        if not listen:
            # The listen socket failed (port taken, no permission): mitmproxy
            # only logs that; a proxy that listens nowhere must not look alive.
            self.log.boot_failed(error="the proxy is not listening (see the mitmproxy line above)")
            self.exit_code = 2
            ctx.master.shutdown()
            return
        fields: dict[str, Any] = {}
        if self._scanner is not None:
            # Whether the DLP views find their runs in C (bot-bottle-dlp's
            # optional extension) or in Python: same findings, 2x the CPU.
            views = sys.modules.get("bot_bottle.dlp.views")
            native = views is not None and views.run_finder() is not None
            fields["dlp_runs"] = "native" if native else "python"
        self.log.boot(
            listen=listen,
            routes=len(c.routes),
            log_level=c.log_level,
            introspection_host=c.introspection_host,
            **fields,
        )

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # Every CONNECT is accepted and only recorded: the request inside the
        # tunnel is judged (host, port, SNI, Host header), so a refusal is a 403
        # whose body the agent can read; curl and most clients do not show the
        # body of a refused CONNECT. Nothing reaches an upstream meanwhile:
        # connections are lazy and server_connect refuses non-routes.
        self._tunnels[flow.client_conn.id] = (flow.request.host, flow.request.port)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._requestheaders(flow)
        except Exception as exc:
            self._fail("requestheaders", exc, host=flow.request.pretty_host)
            self._refuse(flow, Refusal("internal-error", "the proxy failed to judge this request"))

    def _requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        st = self._state(flow)
        bad = _control_byte_header(req.headers.fields)
        if bad is not None:
            self._refuse(flow, bad, 400)
            return
        if req.host.rstrip(".").lower() == self.config.introspection_host:
            self._introspect(flow)
            return
        facts = _facts(flow, self._tunnels.get(flow.client_conn.id))
        verdict = check_request(self.config, facts)
        if isinstance(verdict, Refusal):
            self._refuse(flow, verdict)
            return
        route = st.route = verdict
        # The agent's own credentials never leave: strip them on every route.
        # ``facts.headers`` holds every field name of these headers (lowered,
        # as ``Headers`` matches them), so a name absent there is absent here:
        # ``Headers.pop`` of an absent name costs a scan and a KeyError.
        for name in ("authorization", "proxy-authorization", "proxy-connection"):
            if name in facts.headers:
                req.headers.pop(name, None)
        if "te" in facts.headers:
            _te_trailers_only(req.headers)
        if route.auth is not None:
            token = self.loaded.tokens.get(route.auth.token_slot)
            if token is None:
                self._refuse(
                    flow,
                    Refusal(
                        "credential-unavailable",
                        f"the credential for {route.host} is not available to the proxy",
                        "The operator must set the route's token.",
                    ),
                )
                return
            st.inject = Secret(f"{route.auth.scheme} {token.reveal()}")
            st.injected_token = token
        scanner = self._scanner
        if scanner is not None:
            # Scanned as sent, before the credential goes in: the route's
            # token is not there to be "found" among the known secrets. URL
            # and headers need no body: judged now, so a request refused on
            # them is answered before its body is read.
            found = scanner.scan_request(route, req.method, req.url, req.headers.fields, None)
            if self._refuse_findings(flow, found):
                return
            if scanner.wants_request_body(route):
                # Scanned bodies are buffered whole (a secret split across
                # chunks must not half-leave before the match is seen), so they
                # are capped: by the declared length here, and for a body
                # without one (chunked, HTTP/2) while it is read (the stream
                # refuses it once the buffer would pass the cap). Either way
                # the refusal goes out at once and the rest of the body is
                # dropped unread into memory (streams.EgressHttpStream).
                length = req.headers.get("Content-Length", "0")
                if length.isdigit() and int(length) > MAX_SCANNED_BODY:
                    self._refuse(flow, _too_large(route), 413)
                    return
                ctl = streams.control(flow)
                ctl.body_limit = MAX_SCANNED_BODY
                ctl.on_body_limit = lambda f: self._refuse(f, _too_large(route), 413)
                st.scan_body = True
                st.scanner = scanner
            if route.dlp.inbound_detectors:
                # A compressed body cannot be scanned as it streams; ask for identity.
                req.headers["Accept-Encoding"] = "identity"
        if not st.scan_body:
            self._forward(flow)
            # Bodies we do not scan pass through without being buffered.
            req.stream = True

    def request(self, flow: http.HTTPFlow) -> None:
        st = flow.metadata.get(_META)
        if st is None or st.synthetic:
            return
        if flow.request.trailers:
            # Headers after the body would pass by the Authorization stripping,
            # the header matches and the outbound scan, all judged on the
            # headers. mitmproxy sends them only after this hook, streamed
            # body or not (and cannot send them to an HTTP/1 upstream at all).
            names = sorted({name.lower() for name in flow.request.trailers})
            flow.request.trailers = None
            self.log.block(
                "request trailers dropped",
                host=flow.request.pretty_host,
                path=self._path(flow),
                names=names,
            )
        if not st.scan_body:
            return
        try:
            route, scanner, req = st.route, st.scanner, flow.request
            assert route is not None and scanner is not None
            body = req.raw_content or b""
            if len(body) > MAX_SCANNED_BODY:
                # The stream caps the buffer as it fills; this holds if it did not.
                self._refuse(flow, _too_large(route), 413)
                return
            # As sent: the pipeline undoes its Content-Encoding (and refuses a
            # body that does not decode).
            encoding = ", ".join(req.headers.get_all("Content-Encoding")) or None
            if not self._refuse_findings(flow, scanner.scan_body(route, body, encoding)):
                self._forward(flow)
        except Exception as exc:
            self._fail("request", exc, host=flow.request.pretty_host)
            self._refuse(flow, Refusal("internal-error", "the proxy failed to scan this request"))

    def _refuse_findings(self, flow: http.HTTPFlow, findings: list[Finding]) -> bool:
        """Log outbound findings; refuse the request (True) when one blocks."""
        # The refusal and the log lines echo the path: not when it holds a
        # finding (perhaps encoded, which log redaction would not recognise).
        st = self._state(flow)
        st.withhold_path |= any(f.location.part == "url_path" for f in findings)
        st.withhold_method |= any(f.location.part == "method" for f in findings)
        if not self._report(flow, findings, "outbound"):
            return False
        blocking = [f for f in findings if f.action is Action.BLOCK]
        self._refuse(
            flow,
            Refusal(
                "dlp-outbound",
                "the request carries data that must not leave the bottle: "
                + "; ".join(f.describe() for f in blocking[:3]),
                "Remove the secret from the request; never send credentials yourself.",
            ),
        )
        return True

    def _forward(self, flow: http.HTTPFlow) -> None:
        """The request passed: inject the route's credential and let it go."""
        st = self._state(flow)
        assert st.route is not None
        if st.inject is not None:
            flow.request.headers["Authorization"] = st.inject.reveal()
        self.log.traffic(
            "request",
            host=st.route.host,
            method=self._method(flow),
            path=self._path(flow),
            auth_injected=st.inject is not None,
        )

    def _report(self, flow: http.HTTPFlow, findings: list[Finding], direction: str) -> bool:
        """Log findings; True when one of them blocks."""
        blocking = False
        for f in findings:
            blocking |= f.action is Action.BLOCK
            self.log.block(
                "dlp finding",
                direction=direction,
                action=f.action.value,
                detector=f.detector,
                rule=f.rule,
                where=f.location.describe(),
                snippet=f.snippet,
                host=flow.request.pretty_host,
                method=self._method(flow),
                path=self._path(flow),
            )
        return blocking

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow.metadata.get(_META)
        if st is None or st.synthetic or flow.response is None:
            return
        try:
            # ``Headers.get`` as mitmproxy defines it (the fields joined with
            # ", ", None when absent), without the KeyError it raises and
            # catches for the common absent case.
            codings = flow.response.headers.get_all("Content-Encoding")
            encoding = ", ".join(codings) if codings else None
            scanner = None
            if self._scanner is not None and st.route is not None:
                scanner = self._scanner.response_scanner(st.route, encoding)
            if (scanner is not None or st.injected_token is not None) and _coded_transfer(
                flow.response.headers.get_all("Transfer-Encoding")
            ):
                # mitmproxy undoes only "chunked": the scans would read the
                # body still gzip/deflate-coded (no Content-Encoding says so)
                # while the agent can undo it, e.g. a credential an echo
                # compressed because the agent's request asked "TE: gzip".
                self.log.block(
                    "refused",
                    rule="response-transfer-coding",
                    reason="the response has a transfer coding other than chunked, "
                    "so it cannot be scanned; response cut",
                    host=flow.request.pretty_host,
                    path=self._path(flow),
                )
                flow.kill()
                return
            guard = None
            if st.injected_token is not None:
                # Every response of a route with auth, whatever its DLP settings.
                guard = self._reflection.get(st.injected_token)
                if self._reflected(flow, guard.scan_headers(flow.response.headers.fields)):
                    flow.kill()
                    return
            if scanner is None and guard is None:
                flow.response.stream = True
            else:
                flow.response.stream = _InboundStream(self, flow, scanner, guard, encoding)
        except Exception as exc:
            self._fail("responseheaders", exc, host=flow.request.pretty_host)
            flow.kill()

    def _reflected(self, flow: http.HTTPFlow, findings: list[Finding]) -> bool:
        """Log the injected credential found in the response; True if found."""
        if not findings:
            return False
        self.log.block(
            "refused",
            rule=reflect.RULE,
            reason="the response carries the credential egress injected; response cut",
            where=sorted({f.location.describe() for f in findings})[:3],
            host=flow.request.pretty_host,
            path=self._path(flow),
        )
        return True

    def response(self, flow: http.HTTPFlow) -> None:
        st = flow.metadata.get(_META)
        if st is None or flow.response is None or self.log.level != "full":
            return
        self.log.traffic(
            "response",
            host=flow.request.pretty_host,
            method=self._method(flow),
            path=self._path(flow),
            status=flow.response.status_code,
            ms=round((time.monotonic() - st.started) * 1000, 1),
        )

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.error is not None:
            self.log.traffic(
                "upstream error",
                host=flow.request.pretty_host,
                path=self._path(flow),
                error=flow.error.msg,
            )

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """Scan each message of an opted-in WebSocket with the route's detectors."""
        ws = flow.websocket
        if ws is None or not ws.messages:
            return
        msg = ws.messages[-1]
        try:
            st = flow.metadata.get(_META)
            route = st.route if st is not None else None
            if route is None:
                raise RuntimeError("WebSocket without a judged route")
            findings: list[Finding] = []
            if self._scanner is not None:
                if msg.from_client:
                    findings = self._scanner.scan_message(route, msg.content)
                else:
                    scanner = self._scanner.response_scanner(route, None)
                    if scanner is not None:
                        findings = scanner.feed(msg.content) + scanner.finish()
            direction = "outbound" if msg.from_client else "inbound"
            if self._report(flow, findings, direction):
                msg.drop()
                self.log.block(
                    "refused",
                    rule=f"dlp-websocket-{direction}",
                    reason="WebSocket message dropped",
                    host=route.host,
                    path=self._path(flow),
                )
        except Exception as exc:
            self._fail("websocket_message", exc, host=flow.request.pretty_host)
            msg.drop()
        finally:
            # mitmproxy keeps every message of a flow; a long-lived socket would
            # grow without bound. Only the current one is needed.
            del ws.messages[:-1]

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        # Raw TCP inside an allowed tunnel would bypass every HTTP rule.
        flow.server_conn.error = "bot-bottle egress: raw TCP is not allowed"
        self.log.block("refused", rule="raw-tcp", reason="non-HTTP traffic in a tunnel")

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        # Last line of defence: no upstream connection to anything but a route.
        try:
            address = data.server.address
            if address is None:
                data.server.error = "bot-bottle egress: no destination"
                return
            verdict = check_destination(self.config, str(address[0]), int(address[1]))
            if isinstance(verdict, Refusal):
                data.server.error = f"bot-bottle egress: {verdict.reason}"
                self.log.block("refused", rule=verdict.rule, reason=verdict.reason, host=address[0])
        except Exception as exc:
            self._fail("server_connect", exc)
            data.server.error = "bot-bottle egress: internal error"

    # -- introspection ------------------------------------------------------------

    def _introspect(self, flow: http.HTTPFlow) -> None:
        st = self._state(flow)
        st.synthetic = True
        path = flow.request.path.split("?", 1)[0]
        if flow.request.method not in ("GET", "HEAD") or path not in ("/", "/routes"):
            flow.response = http.Response.make(
                404, b"GET /routes lists the egress routes\n", {"Content-Type": "text/plain"}
            )
            return
        c = self.config
        doc = {
            "routes": [r.describe() for r in c.routes],
            "default_ports": [443, 80],
            "policy": "deny by default: a request passes only if its host is a route "
            "and it satisfies one of the route's matches (if any); Authorization is "
            "replaced by the route's credential; git push over HTTP is always refused",
            "ask": "to change egress, ask the operator through the supervise MCP server",
        }
        flow.response = http.Response.make(
            200,
            json.dumps(doc, indent=2).encode() + b"\n",
            {"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    # -- inbound abort ------------------------------------------------------------

    def abort_client(self, flow: http.HTTPFlow) -> None:
        """Close the agent's connection mid-response (an inbound block after the
        headers went out: there is no status left to change)."""
        proxyserver: Any = ctx.master.addons.get("proxyserver")
        handler = proxyserver.connections.get(flow.client_conn.id) if proxyserver else None
        if handler is not None:
            asyncio.get_running_loop().call_soon(handler.close_connection, handler.client)


class _InboundStream:
    """``flow.response.stream`` callable: forwards chunks as they come, scanning each.

    Chunks are fed as received; the scan pipeline's stream undoes the
    response's Content-Encoding (an undecodable one is a blocking finding).
    Memory stays bounded: a chunk is forwarded (or withheld) as soon as it is
    scanned; only the pipeline's carry-over is kept. On a route with auth,
    the response is also searched for the injected credential (``guard``),
    and the end of a chunk that could begin it waits for the next chunk.
    """

    def __init__(
        self,
        addon: EgressAddon,
        flow: http.HTTPFlow,
        scanner: StreamScanner | None,
        guard: reflect.ReflectionGuard | None = None,
        content_encoding: str | None = None,
    ) -> None:
        self.addon = addon
        self.flow = flow
        self.scanner = scanner
        self.guard = guard
        self.reflection = guard.stream(content_encoding) if guard is not None else None
        self.held = b""
        self.blocked = False

    def __call__(self, chunk: bytes) -> bytes:
        if self.blocked:
            return b""
        try:
            # mitmproxy ends a streamed body with an empty chunk.
            findings: list[Finding] = []
            reflected: list[Finding] = []
            for i in range(0, len(chunk), _FEED_BYTES):
                piece = chunk[i : i + _FEED_BYTES]
                if self.scanner is not None:
                    findings += self.scanner.feed(piece)
                if self.reflection is not None:
                    reflected += self.reflection.feed(piece)
            if not chunk:
                if self.scanner is not None:
                    findings = self.scanner.finish()
                if self.reflection is not None:
                    reflected = self.reflection.finish()
        except Exception as exc:
            self.addon._fail("response stream", exc, host=self.flow.request.pretty_host)
            return self._block()
        if self.addon._reflected(self.flow, [f for f in reflected if f.action is Action.BLOCK]):
            return self._block(rule=reflect.RULE)
        if self.addon._report(self.flow, findings, "inbound") and any(
            f.action is Action.BLOCK for f in findings
        ):
            return self._block()
        if self.guard is None:
            return chunk
        data = self.held + chunk
        keep = self.guard.hold(data) if chunk else 0
        self.held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def _block(self, rule: str = "dlp-inbound") -> bytes:
        self.blocked = True
        if rule == "dlp-inbound":
            self.addon.log.block(
                "refused",
                rule=rule,
                reason="response withheld mid-stream; stream reset",
                host=self.flow.request.pretty_host,
                path=self.flow.request.path.split("?", 1)[0],
            )
        if streams.installed():
            # Reset this stream on both legs right after this chunk (HTTP/2:
            # this stream only). At the end of the body the kill does it: the
            # response hook comes next and mitmproxy checks for a kill there.
            streams.control(self.flow).abort = True
            if self.flow.killable:
                self.flow.kill()
        else:
            self.addon.abort_client(self.flow)
        return b""


def _too_large(route: Route) -> Refusal:
    return Refusal(
        "body-too-large",
        f"request bodies to {route.host} are scanned for secrets before they leave, "
        f"and a scanned body is limited to {MAX_SCANNED_BODY // 2**20} MiB "
        "(with or without Content-Length)",
        "Send the data in smaller requests, or ask for a route without outbound DLP "
        "for bulk uploads.",
    )


def _listen_addrs() -> list[Any]:
    try:
        proxyserver: Any = ctx.master.addons.get("proxyserver")
        return list(proxyserver.listen_addrs())
    except Exception:
        return []


def _facts(flow: http.HTTPFlow, tunnel: tuple[str, int] | None) -> RequestFacts:
    req = flow.request
    path, _, query = req.path.partition("?")
    # One pass over the raw fields, grouped as mitmproxy's ``get_all`` groups
    # them (bytes ``lower``), keyed by the first spelling's ``str.lower``:
    # the same mapping as ``{n.lower(): headers.get_all(n) for n in headers}``
    # (first key wins), without a scan of every field per name.
    groups: dict[bytes, tuple[str, list[str]]] = {}
    for raw_name, raw_value in req.headers.fields:
        group = groups.get(raw_name.lower())
        if group is None:
            group = groups[raw_name.lower()] = (_native(raw_name).lower(), [])
        group[1].append(_native(raw_value))
    headers: dict[str, list[str]] = {}
    for key, values in groups.values():
        headers.setdefault(key, values)
    client = flow.client_conn
    return RequestFacts(
        scheme=req.scheme,
        host=req.host,
        port=req.port,
        method=req.method,
        path=path,
        query=query,
        headers=headers,
        authority=req.host_header,
        sni=client.sni if client.tls else None,
        connect_target=tunnel,
    )


def _te_trailers_only(headers: http.Headers) -> None:
    """Keep only ``trailers`` of the agent's ``TE``: a transfer coding it asks
    for (``TE: gzip``) would come back as one mitmproxy leaves on the body,
    which a scanned or credentialed route must cut (``_coded_transfer``);
    not asking for it lets such routes work with upstreams that honour it.
    ``trailers`` stays: HTTP/2 allows nothing else and gRPC requires it."""
    keep = any(
        c.split(";", 1)[0].strip().lower() == "trailers"
        for value in headers.get_all("te")
        for c in value.split(",")
    )
    del headers["te"]
    if keep:
        headers["te"] = "trailers"


def _coded_transfer(values: list[str]) -> bool:
    """Whether ``Transfer-Encoding`` names a coding besides ``chunked`` (and
    ``identity``, which is none): one mitmproxy leaves on the body."""
    return any(
        c.strip().lower() not in ("", "chunked", "identity")
        for value in values
        for c in value.split(",")
    )


def _native(data: bytes) -> str:
    """A header's bytes as mitmproxy's ``Headers`` gives them."""
    return data.decode("utf-8", "surrogateescape")


#: Bytes no header may hold (RFC 9110 5.5: field values are visible
#: characters, SP and HTAB; obs-text is let through). A NUL or CR/LF that an
#: upstream (or a log reader) splits on would make the proxy's view of the
#: headers differ from the upstream's.
_HEADER_CONTROL = frozenset(range(0x20)) - {0x09} | {0x7F}


#: The same set as a byte class: one C-level search per name and value
#: instead of a Python test per byte.
_HEADER_CONTROL_RE = re.compile(
    b"[" + b"".join(re.escape(bytes([b])) for b in sorted(_HEADER_CONTROL)) + b"]"
)


def _control_byte_header(fields: Sequence[tuple[bytes, bytes]]) -> Refusal | None:
    search = _HEADER_CONTROL_RE.search
    for name, value in fields:
        for part, data in (("name", name), ("value", value)):
            m = search(data)
            if m is not None:
                bad = data[m.start()]
                shown = name.decode("ascii", "backslashreplace")[:60]
                shown = "".join(c if 0x20 < ord(c) < 0x7F else f"\\x{ord(c):02x}" for c in shown)
                return Refusal(
                    "header-control-byte",
                    f"the request header {shown!r} has a control byte (0x{bad:02x}) in its {part}",
                    "Header names and values may not hold NUL, CR, LF or other control "
                    "characters; remove them.",
                )
    return None
