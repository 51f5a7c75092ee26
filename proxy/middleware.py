"""The one middleware: CORS preflights, errors as JSON, and request metrics.

One middleware instead of three keeps the per-request overhead to a single extra
coroutine. Preflights for the OFREP endpoints are answered here, before routing,
authentication or Redis. Any :class:`~crivline.errors.ApiError` or aiohttp refusal
becomes the JSON body of :mod:`proxy.errors`; anything else is logged once as a bug
and answered 500 with a JSON body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from crivline.errors import ApiError
from crivline.logs import fields
from proxy import appkeys, cors
from proxy.errors import api_error_response, http_exception_response, internal_error_response
from proxy.streams import OPENED

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    with_cors = cors.applies(request.path)
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
    route = request.match_info.route.name or "unmatched"
    elapsed = request.get(OPENED)
    if elapsed is None:
        elapsed = time.perf_counter() - started
    request.app[appkeys.METRICS].observe_request(route, request.method, response.status, elapsed)
    return response
