"""The one middleware: CORS preflights, errors as JSON, and request metrics.

One middleware instead of three keeps the per-request overhead to a single extra
coroutine. Preflights for the OFREP endpoints are answered here, before routing,
authentication or Redis. Any :class:`~crivline.errors.ApiError` or aiohttp refusal
becomes the JSON body of :mod:`proxy.errors`; anything else is logged once as a bug
and answered 500 with a JSON body.

With tracing on, :func:`traced_middleware` takes its place: the same middleware, and for
a share of the SDK requests (``CRIVLINE_TRACE_REQUEST_RATIO``) a span around it. With
tracing off it is not installed at all, so tracing costs the request path nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Middleware

from crivline.errors import ApiError
from crivline.logs import fields
from crivline.tracing import SpanKind, StatusCode, Tracing
from proxy import appkeys, cors
from proxy.errors import api_error_response, http_exception_response, internal_error_response
from proxy.streams import OPENED

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The SDK requests a span may be recorded for. Streams are not among them: a span that
# lasts as long as the stream says little and is exported only when it ends; what a
# stream receives is in the proxy's "proxy apply" spans.
TRACED_ROUTES = frozenset({"sdk_flags", "ofrep_flag", "ofrep_bulk"})


@web.middleware
def edge_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    # Hands back around's coroutine itself: no frame of its own per request, and none
    # kept alive for as long as a stream is open.
    return around(request, handler, None, request.path.startswith(cors.PREFIX))


async def around(
    request: web.Request, handler: Handler, route: str | None, with_cors: bool
) -> web.StreamResponse:
    """What :func:`edge_middleware` does around ``handler``. :mod:`proxy.fastlane` calls
    it with the route's name and whether CORS applies, which it knows from the path it
    matched (None: read from the request's route match after the handler)."""
    started = perf_counter()
    response: web.StreamResponse
    if with_cors and cors.is_preflight(request):
        response = cors.preflight()
    else:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = api_error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = http_exception_response(exc)
        except Exception:
            log.exception(
                "unhandled error",
                extra=fields(path=request.path, method=request.method),
            )
            response = internal_error_response()
    if with_cors:
        cors.decorate(response)
    if route is None:
        route = request.match_info.route.name or "unmatched"
    # A stream (already sent: prepared) counts the time to open it, which it recorded;
    # any other answer the time until now. Only streams look the request's state up.
    elapsed = request.get(OPENED) if response.prepared else None
    if elapsed is None:
        elapsed = perf_counter() - started
    request.app[appkeys.METRICS].observe_request(route, request.method, response.status, elapsed)
    return response


def traced_middleware(tracing: Tracing) -> Middleware:
    """:func:`edge_middleware` with a span around a sampled share of the SDK requests
    (``tracing.request_ratio``; a request's own ``traceparent`` header makes it the
    span's parent). An unsampled request costs one random draw and a function call: the
    middleware hands back :func:`edge_middleware`'s coroutine itself, no coroutine of its
    own around it."""
    ratio = tracing.request_ratio
    draw = random.random

    @web.middleware
    def traced(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if draw() >= ratio or request.match_info.route.name not in TRACED_ROUTES:
            return edge_middleware(request, handler)
        return _traced(tracing, request, handler)

    return traced


async def _traced(tracing: Tracing, request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    template = route.resource.canonical if route.resource is not None else request.path
    span = tracing.start(
        f"{request.method} {template}",
        parent=request.headers.get("traceparent"),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": template},
    )
    try:
        response = await edge_middleware(request, handler)
    except BaseException as exc:  # a redirect, or the client went away (cancelled)
        if span is not None:
            if isinstance(exc, web.HTTPException):
                span.set_attribute("http.response.status_code", exc.status)
            else:
                span.set_attribute("error.type", type(exc).__name__)
            span.end()
        raise
    if span is not None:
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()
    return response
