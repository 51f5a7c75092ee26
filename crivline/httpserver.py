"""What the HTTP servers (control, proxy) need from aiohttp beyond its defaults.

- **Idle connections are closed** after ``idle_seconds`` (:func:`handler_args`, given to
  ``web.Application(handler_args=…)`` so every runner uses it). aiohttp starts that
  timer when a connection opens and again after each answer, and bytes of an unfinished
  request do not reset it: a client that trickles its headers (slowloris) or opens a
  connection and says nothing is dropped after that long, whatever it sends. aiohttp's
  own default is an hour. Ours (75 s) outlasts the usual load-balancer idle timeout
  (60 s), so a balancer never reuses a connection we are closing.
- **Bodies are read within a deadline** (:func:`read_body`): 408 when a client stops
  sending half-way, 400 when the body cannot be decoded (a broken ``Content-Encoding``
  or chunked framing) — never a handler waiting forever, never a 500.
- **Expect**: :func:`expect_continue` answers ``100-continue`` as aiohttp does and
  ignores any other expectation (RFC 9110 §10.1.1 allows it). aiohttp's default handler
  answers 417 by echoing the header, and a 500 when that header is not UTF-8. Every
  route gets it, and so do requests no route serves: :func:`refuse_unmatched` adds a
  last resource that answers them 404 (or 405 with ``Allow``) through the app's
  middlewares — aiohttp's own 404/405 would use the default handler. That resource
  lists no routes, so ``app.router.routes()`` still lists exactly the app's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sized
from typing import Any, NoReturn

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from yarl import URL

from crivline.errors import BadRequest, RequestTimeout

IDLE_SECONDS = 75.0
BODY_SECONDS = 30.0


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


async def read_body(request: web.Request, seconds: float = BODY_SECONDS) -> bytes:
    """The whole body within ``seconds``. ``web.HTTPRequestEntityTooLarge`` (over
    ``client_max_size``) is left to the caller, which words its own 413."""
    try:
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
