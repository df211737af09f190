"""Per-stream control that mitmproxy's addon hooks do not give.

mitmproxy (12.x) judges a request in ``requestheaders`` but, when an addon
answers there, still reads the whole request body into memory before it sends
the answer; it buffers a body it is not told to stream without any bound;
and an addon cannot end one stream of a connection while the response is
streaming (``flow.kill()`` only takes effect at the next hook: mitmproxy
issue 4711). The egress addon needs all three, so the daemon swaps
:class:`EgressHttpStream`, a subclass of mitmproxy's per-request state
machine, into the HTTP layer (:func:`install`). The addon steers it through
a :class:`StreamControl` in the flow's metadata:

- a response set in ``requestheaders`` while the body is still coming is
  sent at once; the rest of the body is read and dropped (never buffered),
  so a refused upload costs no memory, and the client gets the answer
  whether or not it reads while it sends (HTTP/1: ``Connection: close``);
- ``body_limit`` caps a body that is buffered for scanning whatever its
  framing (``Content-Length``, chunked, HTTP/2 DATA frames): past it
  ``on_body_limit`` sets the refusal, which is sent as above;
- ``abort`` (set by the response scanner) resets this stream on both legs
  at once: HTTP/2 ``RST_STREAM`` for this stream only (other streams of the
  agent's connection go on), a closed connection on HTTP/1, where nothing
  else can mark a response as cut short.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import flow as mitm_flow
from mitmproxy import http
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.layers import http as layers_http
from mitmproxy.proxy.layers.http import DropStream, HttpStream, SendHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    RequestProtocolError,
    RequestTrailers,
    ResponseData,
    ResponseEndOfMessage,
    ResponseProtocolError,
    ResponseTrailers,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook
from mitmproxy.proxy.utils import expect

META = "bot_bottle_egress_stream"


@dataclass
class StreamControl:
    #: Largest request body buffered for this flow (None: no cap).
    body_limit: int | None = None
    #: Called when the buffered body would pass ``body_limit``; sets ``flow.response``.
    on_body_limit: Callable[[http.HTTPFlow], None] | None = None
    #: Reset this stream (both legs) after the current response chunk.
    abort: bool = False


def control(flow: http.HTTPFlow) -> StreamControl:
    ctl = flow.metadata.get(META)
    if ctl is None:
        ctl = flow.metadata[META] = StreamControl()
    return ctl


def installed() -> bool:
    return layers_http.HttpStream is EgressHttpStream


def install() -> None:
    """Make mitmproxy's HTTP layer create :class:`EgressHttpStream` streams.

    ``HttpLayer.make_stream`` looks ``HttpStream`` up in its module at call
    time; if a mitmproxy upgrade changes that, refuse to start rather than
    run without these guarantees.
    """
    if "HttpStream" not in layers_http.HttpLayer.make_stream.__code__.co_names:
        raise RuntimeError(
            "this mitmproxy version builds HTTP streams differently; "
            "bot_bottle_sidecars.egress.streams must be updated for it"
        )
    layers_http.HttpStream = EgressHttpStream  # type: ignore[misc]


class EgressHttpStream(HttpStream):
    def _control(self) -> StreamControl | None:
        return self.flow.metadata.get(META)

    @expect(RequestHeaders)
    def state_wait_for_request_headers(self, event: RequestHeaders) -> layer.CommandGenerator[None]:
        yield from super().state_wait_for_request_headers(event)
        if (
            not event.end_stream
            and self.client_state == self.state_consume_request_body
            and self.flow.response is not None
            and self.flow.error is None
        ):
            # Answered in requestheaders (a refusal) with the body still to come.
            yield from self._answer_now()

    @expect(RequestData, RequestTrailers, RequestEndOfMessage)
    def state_consume_request_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        ctl = self._control()
        if (
            isinstance(event, RequestData)
            and ctl is not None
            and ctl.body_limit is not None
            and len(self.request_body_buf) + len(event.data) > ctl.body_limit
        ):
            self.request_body_buf.clear()
            if ctl.on_body_limit is not None:
                ctl.on_body_limit(self.flow)
            if self.flow.response is None:
                # Fail closed even if the addon set no answer: mitmproxy's 413.
                yield SendHttp(
                    ResponseProtocolError(
                        self.stream_id, "request body too large", ErrorCode.REQUEST_TOO_LARGE
                    ),
                    self.context.client,
                )
                self.flow.live = False
                self.client_state = self.server_state = self.state_errored
                yield DropStream(self.stream_id)
                return
            yield from self._answer_now()
            return
        yield from super().state_consume_request_body(event)

    def _answer_now(self) -> layer.CommandGenerator[None]:
        """Send ``flow.response`` before the request body is complete; drop the rest."""
        response = self.flow.response
        assert response is not None
        self.request_body_buf.clear()
        self.client_state = self.state_discard_request_body
        if not (self.flow.request.is_http2 or self.flow.request.is_http3):
            # The body still on the wire cannot be told from the next request.
            response.headers["Connection"] = "close"
        response.timestamp_start = time.time()
        # The hooks mitmproxy runs for any answer set by an addon, in its order.
        yield HttpResponseHeadersHook(self.flow)
        yield from self.send_response()
        if self.server_state == self.state_done:
            yield SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
            self.flow.live = False

    @expect(RequestData, RequestTrailers, RequestEndOfMessage)
    def state_discard_request_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        # Data and trailers are dropped as they come; the stream ends with the body.
        if isinstance(event, RequestEndOfMessage):
            self.client_state = self.state_done
            yield DropStream(self.stream_id)

    @expect(ResponseData, ResponseTrailers, ResponseEndOfMessage)
    def state_stream_response_body(self, event: events.Event) -> layer.CommandGenerator[None]:
        yield from super().state_stream_response_body(event)
        ctl = self._control()
        if ctl is not None and ctl.abort and self.server_state == self.state_stream_response_body:
            yield from self._abort_response()

    def _abort_response(self) -> layer.CommandGenerator[None]:
        """Cut this response short on both legs, leaving the connections' other streams."""
        msg = "bot-bottle egress: response withheld (inbound DLP)"
        self.flow.error = mitm_flow.Error(msg)
        self.flow.live = False
        # HTTP/2: RST_STREAM for this stream; HTTP/1: the connection is closed.
        yield SendHttp(
            ResponseProtocolError(self.stream_id, msg, ErrorCode.KILL), self.context.client
        )
        if self.context.server.connected:
            yield SendHttp(
                RequestProtocolError(self.stream_id, msg, ErrorCode.KILL), self.context.server
            )
        self.client_state = self.server_state = self.state_errored
        yield DropStream(self.stream_id)
