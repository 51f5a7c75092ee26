"""What the HTTP servers (control, proxy, syncd) need from aiohttp beyond its defaults.

- **Idle connections are closed** after ``idle_seconds`` (:func:`handler_args`, given to
  ``web.Application(handler_args=…)`` so every runner uses it). aiohttp starts that
  timer when a connection opens and again after each answer, and bytes of an unfinished
  request do not reset it: a client that trickles its headers (slowloris) or opens a
  connection and says nothing is dropped after that long, whatever it sends. aiohttp's
  own default is an hour. Ours (75 s) outlasts the usual load-balancer idle timeout
  (60 s), so a balancer never reuses a connection we are closing.
- **Bodies are read within a size and a deadline** (:func:`read_body`): 413 over the
  limit, 408 when a client stops sending half-way, 400 when the body cannot be decoded
  (a broken ``Content-Encoding`` or chunked framing) — never a handler waiting forever,
  never a 500.
- **Expect**: :func:`expect_continue` answers ``100-continue`` as aiohttp does and
  ignores any other expectation (RFC 9110 §10.1.1 allows it). aiohttp's default handler
  answers 417 by echoing the header, and a 500 when that header is not UTF-8. Every
  route gets it, and so do requests no route serves: :func:`refuse_unmatched` adds a
  last resource that answers them 404 (or 405 with ``Allow``) through the app's
  middlewares — aiohttp's own 404/405 would use the default handler. That resource
  lists no routes, so ``app.router.routes()`` still lists exactly the app's own.
- **Serving** (:func:`serve`, :func:`listen`, :func:`on_signals`): one way to listen, to
  stop on SIGTERM/SIGINT (handlers removed afterwards) and to shut down gracefully;
  connections go through :mod:`crivline.wire` (aiohttp's own refusals in the part's
  error format, logged once and rate-limited; the connection cap; the write timeout).
- **Small shared pieces**: weak ETag comparison (:func:`etag_matches`), plain decimal
  header values (:func:`decimal`), the headers of an SSE response (:data:`SSE_HEADERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Sized
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from crivline.errors import BadRequest, PayloadTooLarge, RequestTimeout, StartupError
from crivline.listening import listen_failure
from crivline.logs import fields
from crivline.wire import Runner

APPLICATION_JSON = "application/json"
IDLE_SECONDS = 75.0
BODY_SECONDS = 30.0
SHUTDOWN_SECONDS = 10.0  # in-flight requests get this long on SIGTERM

# An SSE response: no caching or transforming proxies, no buffering nginx-like ones.
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def handler_args(idle_seconds: float = IDLE_SECONDS) -> dict[str, Any]:
    """``web.Application(handler_args=…)``: the connection timing of every runner."""
    return {"keepalive_timeout": idle_seconds}


async def expect_continue(request: web.Request) -> None:
    """The ``expect_handler`` of every route: ``100-continue`` and nothing else."""
    expect = request.headers.get("Expect", "")
    if request.version >= (1, 1) and expect.strip().lower() == "100-continue":
        writer: AbstractStreamWriter = request.writer
        await writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.output_size = 0  # the answer proper has not started


def add_routes(app: web.Application, table: web.RouteTableDef) -> None:
    """``app.add_routes(table)``, each route with :func:`expect_continue`."""
    for route in table:
        assert isinstance(route, web.RouteDef), route
        app.router.add_route(
            route.method, route.path, route.handler, expect_handler=expect_continue, **route.kwargs
        )


class _Refusal(web.AbstractRoute):
    """The route of a request no route serves: raises its 404 or 405."""

    def __init__(self, refusal: web.HTTPException) -> None:
        super().__init__("*", self._refuse, expect_handler=expect_continue)
        self._refusal = refusal

    async def _refuse(self, request: web.Request) -> NoReturn:
        raise self._refusal

    @property
    def name(self) -> str | None:
        return None

    def get_info(self) -> Any:  # aiohttp types it with a private TypedDict
        return {"http_exception": self._refusal}

    def url_for(self, *args: str, **kwargs: str) -> URL:
        raise RuntimeError("a refusal has no URL")


class _Unmatched(web.AbstractResource, Sized):
    """Registered last, under "/": reached only when no other resource matched."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        super().__init__()
        self._router = router

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("no URL: this resource stands for every unknown one")

    async def resolve(
        self, request: web.Request
    ) -> tuple[web.UrlMappingMatchInfo | None, set[str]]:
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is self:
                continue
            match, methods = await resource.resolve(request)
            if match is not None:
                return None, set()  # a resource registered after us serves it
            allowed |= methods
        refusal: web.HTTPException = (
            web.HTTPMethodNotAllowed(request.method, allowed) if allowed else web.HTTPNotFound()
        )
        return web.UrlMappingMatchInfo({}, _Refusal(refusal)), set()

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the unmatched-request resource cannot live under a prefix")

    def get_info(self) -> Any:  # aiohttp types it with a private TypedDict
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(())


def refuse_unmatched(app: web.Application) -> None:
    """After the app's routes: requests no route serves get 404/405 through the app's
    middlewares (its error format), with :func:`expect_continue`."""
    app.router.register_resource(_Unmatched(app.router))


async def read_body(request: web.Request, max_bytes: int, seconds: float = BODY_SECONDS) -> bytes:
    """The whole body within ``seconds``: 413 over ``max_bytes`` (by its Content-Length
    or as it arrives), 408 when it stops arriving, 400 when it cannot be decoded."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(
            f"the request body is {length} bytes; the limit is {max_bytes} bytes"
            " (CRIVLINE_MAX_BODY_BYTES)"
        )
    if not request.body_exists:
        return b""
    try:
        if request.content.is_eof():
            # All of it has arrived (a small body comes with the headers): reading it
            # cannot wait, so no timer is armed for it.
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {seconds:g} seconds"
        ) from None
    except web.RequestPayloadError:
        raise BadRequest(
            "the request body cannot be read: its Content-Encoding or chunked framing is broken"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"the request body is over the limit of {max_bytes} bytes (CRIVLINE_MAX_BODY_BYTES)"
        ) from None


def decimal(raw: str, max_digits: int = 18) -> int | None:
    """A header or query value that must be a plain decimal number (ASCII digits only,
    no sign, at most ``max_digits`` of them so it fits 64 bits), or None."""
    if raw.isascii() and raw.isdigit() and len(raw) <= max_digits:
        return int(raw)
    return None


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an If-None-Match header against ``etag``."""
    if not if_none_match:
        return False
    opaque = etag.removeprefix("W/")
    if if_none_match in (etag, opaque):
        return True
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


async def listen(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = SHUTDOWN_SECONDS,
    port_variable: str = "",
    **site_options: Any,
) -> web.AppRunner:
    """Set ``app`` up and listen on ``host:port``; the runner, for ``cleanup()``.

    A port that cannot be bound is a :class:`StartupError` naming the cause (the host
    when it does not resolve, else ``port_variable``, the setting the port came from),
    after the app's resources are released again."""
    runner = Runner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, **site_options).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(listen_failure(host, port, port_variable, exc)) from None
    return runner


@contextlib.contextmanager
def on_signals(callback: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``callback`` until the block ends; the handlers are
    removed then, so a later signal gets the default behaviour again."""
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, callback)
    try:
        yield
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = SHUTDOWN_SECONDS,
    stop: asyncio.Event | None = None,
    port_variable: str = "",
    listening: Callable[[], None] | None = None,
    **site_options: Any,
) -> None:
    """Serve ``app`` until ``stop`` is set (default: until SIGTERM or SIGINT), then shut
    down gracefully: aiohttp runs ``on_shutdown``, lets in-flight requests finish within
    ``shutdown_timeout`` and unwinds the cleanup contexts. The signal handlers stay until
    the end: a second SIGTERM must not cut the graceful shutdown short."""
    signals: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if stop is None:
        stop = asyncio.Event()
        signals = on_signals(stop.set)
    with signals:
        runner = await listen(
            app,
            host,
            port,
            shutdown_timeout=shutdown_timeout,
            port_variable=port_variable,
            **site_options,
        )
        try:
            if listening is not None:
                listening()
            await stop.wait()
            _log.info("stopping: finishing in-flight requests", extra=fields(port=port))
        finally:
            await runner.cleanup()


_log = logging.getLogger(__name__)
