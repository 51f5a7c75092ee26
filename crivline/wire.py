"""The connection level of every HTTP part, under the routes and the middlewares.

aiohttp answers some requests itself, before any route runs: those its HTTP parser
refuses (a malformed request line or header, bad framing, an oversized line), and those
its machinery fails on (a ``CONNECT``, or an absolute URL with no path, carrying an
``Expect`` header that is not UTF-8). Left alone it answers them ``text/plain`` echoing
the offending line — which may be a header carrying a key — and logs each one with its
traceback. Here, instead (:class:`Runner`, used by :func:`crivline.httpserver.listen`):

- **the part's own error format**: each app's :class:`Gate` (under :data:`GATE`) says
  how an error looks (problem+json by default, the proxy's OFREP-shaped JSON for the
  proxy), with a fixed description of what was wrong — never the request's bytes;
- the same for the HTTP errors aiohttp raises where no middleware sees them (the 417
  of an unknown ``Expect`` on a ``CONNECT``);
- **a 400, not a 500**, for a header aiohttp cannot decode (:class:`UnicodeError`);
- **one log line per refused request, rate-limited** (:class:`RefusalLog`): at most
  ``burst`` lines per ``window`` seconds, then one summary line per window saying how
  many more were refused — a flood of garbage cannot flood the log;
- **an open-connection cap** (:class:`Gate`): past ``max_connections`` a new
  connection gets a ready-made 503 with ``Retry-After`` and is closed (at once on our
  side; within a second at most if the client keeps sending), counted
  in :attr:`Gate.refused`; :meth:`Gate.crowded` tells the proxy to refuse new streams
  (503 + ``Retry-After``) before the cap is reached, so the last connections stay for
  ordinary requests;
- **a write timeout** for ordinary answers: one that the client has not taken in
  full ``write_seconds`` after it was handed over (a reader that stopped reading, its
  socket full) loses its connection, counted in :attr:`Gate.write_timeouts`. Streams
  have their own bound (the hub cuts a stream reader that holds too much unsent).
- **a front door** (optional, :data:`FRONT_DOOR`): a part may take requests before
  aiohttp's router and middlewares and hand the rest on (the proxy's hot routes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast

import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crivline.logs import fields

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

# An app's error format: (status, detail) -> (content type, body).
Render = Callable[[int, str], tuple[str, bytes]]


def problem(status: int, detail: str) -> tuple[str, bytes]:
    """RFC 9457 problem+json, as control answers its own errors."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return PROBLEM_JSON, orjson.dumps(body)


# What was wrong, by aiohttp's exception class: fixed text, never the request's bytes.
_WHY: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.LineTooLong, "a request line or header is longer than this server reads"),
    (http_exceptions.BadHttpMethod, "the request line has no valid HTTP method"),
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP/1.1"),
    (http_exceptions.InvalidHeader, "a header line is malformed"),
    (http_exceptions.TransferEncodingError, "the Transfer-Encoding framing is broken"),
    (http_exceptions.ContentLengthError, "the Content-Length does not match the body"),
    (http_exceptions.ContentEncodingError, "the Content-Encoding of the body is broken"),
    (http_exceptions.InvalidURLError, "the request target is not a valid URL"),
    (UnicodeError, "a header or the request target is not valid UTF-8"),
)


# aiohttp's own HTTP errors that reach no middleware (a CONNECT, a target with no path).
_EXCEPTION_DETAILS = {
    404: "there is nothing at this address",
    405: "this method is not allowed here",
    417: "the only expectation this server meets is 100-continue",
}
_KEPT = ("allow", "retry-after")
_LARGE_ANSWER = 64 * 1024  # aiohttp's write buffer high-water mark


def describe_refusal(status: int, exc: BaseException | None) -> str:
    """The client's description of why aiohttp refused its request (fixed text)."""
    for kind, why in _WHY:
        if isinstance(exc, kind):
            return why
    if status >= 500:
        return "the server could not handle this request"
    return "the request is malformed and cannot be read as HTTP/1.1"


class RefusalLog:
    """At most ``burst`` lines per ``window`` seconds, then a summary per window."""

    def __init__(self, *, burst: int = 10, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self._started = -window
        self._logged = 0
        self._suppressed = 0
        self._flush: asyncio.TimerHandle | None = None

    def refused(self, status: int, exc: BaseException | None, peer: str | None) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._started >= self.window:
            self._summarise()
            self._started, self._logged = now, 0
        if self._logged < self.burst:
            self._logged += 1
            level = logging.ERROR if status >= 500 else logging.INFO
            reason = type(exc).__name__ if exc is not None else "unknown"
            log.log(
                level,
                "request refused before routing",
                extra=fields(status=status, reason=reason, peer=peer),
            )
            return
        self._suppressed += 1
        if self._flush is None:
            self._flush = loop.call_at(self._started + self.window, self._summarise)

    def _summarise(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._suppressed:
            log.warning(
                "more requests refused before routing than logged",
                extra=fields(unlogged=self._suppressed, window_seconds=self.window),
            )
            self._suppressed = 0

    def close(self) -> None:
        self._summarise()


@dataclass
class Gate:
    """The connection limits of one server process, and what they refused."""

    max_connections: int = 0  # 0: no cap
    write_seconds: float = 0.0  # 0: no write timeout
    open: int = 0
    refused: int = 0
    write_timeouts: int = 0
    render: Render = problem
    log: RefusalLog = field(default_factory=RefusalLog)
    _full: bytes = b""

    def crowded(self) -> bool:
        """Near the cap (90% of it): time to refuse new long-lived streams."""
        cap = self.max_connections
        return cap > 0 and self.open >= cap - max(1, cap // 10)

    def admit(self) -> bool:
        if self.max_connections and self.open >= self.max_connections:
            self.refused += 1
            return False
        self.open += 1
        return True

    def full_answer(self) -> bytes:
        """The ready-made 503 of a connection over the cap."""
        if not self._full:
            ctype, body = self.render(
                503,
                f"this server holds its maximum of {self.max_connections} open connections;"
                " retry later or elsewhere",
            )
            head = (
                "HTTP/1.1 503 Service Unavailable\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Retry-After: 1\r\nConnection: close\r\n\r\n"
            )
            self._full = head.encode() + body
        return self._full


GATE = web.AppKey("crivline_wire_gate", Gate)

# An app's front door (optional): given the app and aiohttp's request handler (the
# router and the middlewares), the handler every request of a connection goes to. The
# proxy answers its few hottest routes there, before the router (proxy.fastlane).
FrontDoor = Callable[
    [web.Application, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]],
    Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
]
FRONT_DOOR: web.AppKey[FrontDoor] = web.AppKey("crivline_wire_front_door")


class GateCollector(Collector):
    """A gate's counts for a part's Prometheus registry, read at scrape time."""

    def __init__(self, gate: Gate, prefix: str) -> None:
        self._gate = gate
        self._prefix = prefix

    def collect(self) -> Iterable[Metric]:
        gate, p = self._gate, self._prefix
        yield GaugeMetricFamily(p + "connections_open", "Open client connections", gate.open)
        yield CounterMetricFamily(
            p + "connections_refused",
            "Connections refused at the open-connection cap (CRIVLINE_MAX_CONNECTIONS)",
            gate.refused,
        )
        yield CounterMetricFamily(
            p + "write_timeouts",
            "Connections closed because an answer was not taken within CRIVLINE_WRITE_TIMEOUT",
            gate.write_timeouts,
        )


class _Handler(RequestHandler):
    """aiohttp's connection handler with the gate and the part's error answers."""

    def __init__(self, manager: web.Server, *, gate: Gate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._admitted = False
        self._write_deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._refused_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            # The 503, then our end of the connection. What the client sends meanwhile is
            # read and dropped (closing with unread bytes would reset the connection and
            # lose the answer); it is closed when the client closes, or after a second.
            # uvloop's transports are not registered as asyncio's classes: no isinstance.
            writer = cast(asyncio.WriteTransport, transport)
            writer.write(self._gate.full_answer())
            writer.write_eof()
            self._linger = asyncio.get_running_loop().call_later(1.0, transport.close)
            self._refused_transport = transport
            return
        self._admitted = True
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)

    def eof_received(self) -> None:
        if self._refused_transport is not None:
            self._refused_transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            if self._linger is not None:
                self._linger.cancel()
            self._refused_transport = None
            return
        self._admitted = False
        self._gate.open -= 1
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        super().connection_lost(exc)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = self._reformat(resp)  # raised by aiohttp itself, before any middleware
        if self._gate.write_seconds:
            # An answer larger than the socket's buffers may block in its writes: its
            # deadline runs from now. A small one is armed only if it left bytes unsent
            # (the common case costs no timer); the first such answer's deadline stands.
            length = resp.content_length
            if length is None or length > _LARGE_ANSWER:
                self._arm(renew=True)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if self._gate.write_seconds and self._unsent():
                self._arm(renew=False)

    def _arm(self, *, renew: bool) -> None:
        if self._write_deadline is not None:
            if not renew:
                return
            self._write_deadline.cancel()
        self._write_deadline = asyncio.get_running_loop().call_later(
            self._gate.write_seconds, self._check_written
        )

    def _reformat(self, exc: web.HTTPException) -> web.Response:
        detail = _EXCEPTION_DETAILS.get(exc.status) or exc.reason
        ctype, body = self._gate.render(exc.status, detail)
        headers = {"Content-Type": ctype}
        headers.update((k, v) for k, v in exc.headers.items() if k.lower() in _KEPT)
        response = web.Response(status=exc.status, body=body, headers=headers)
        response.force_close()
        return response

    def _unsent(self) -> int:
        transport = self.transport  # asyncio's or uvloop's (not an asyncio subclass)
        if transport is None or transport.is_closing():
            return 0
        return int(transport.get_write_buffer_size())

    def _check_written(self) -> None:
        self._write_deadline = None
        if self._current_request is not None:
            return  # a handler runs (a stream has its own bound); its answer gets a deadline
        transport = self.transport
        if self._unsent() and transport is not None:
            self._gate.write_timeouts += 1
            transport.abort()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, UnicodeError):
            status = 400  # a header aiohttp's machinery could not decode: the client's fault
        self._gate.log.refused(status, exc, request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed")
        ctype, body = self._gate.render(status, describe_refusal(status, exc))
        response = web.Response(status=status, body=body, headers={"Content-Type": ctype})
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, gate: Gate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    def __call__(self) -> RequestHandler:
        return _Handler(self, gate=self.gate, loop=asyncio.get_running_loop(), **self._kwargs)


def gate_of(app: web.Application) -> Gate:
    """The app's gate (a default one, problem+json and no limits, if it has none)."""
    gate = app.get(GATE)
    if gate is None:
        gate = Gate()
        app[GATE] = gate
    return gate


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections go through the app's :class:`Gate`."""

    async def _make_server(self) -> web.Server:
        gate = gate_of(self.app)  # before start-up freezes the app
        server = await super()._make_server()
        handler = server.request_handler
        front = self.app.get(FRONT_DOOR)
        if front is not None:
            handler = front(self.app, handler)
        return _Server(
            handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            gate=gate,
            **server._kwargs,
        )

    async def _cleanup_server(self) -> None:
        await super()._cleanup_server()
        gate = self.app.get(GATE)
        if gate is not None:
            gate.log.close()
