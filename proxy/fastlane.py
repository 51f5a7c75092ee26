"""The hot routes answered before aiohttp's router: polling and the OFREP single evaluation.

Nearly every request an edge serves is ``GET /sdk/v1/flags`` or ``POST
/ofrep/v1/evaluate/flags/{key}``. For those two, resolving the route through the URL
dispatcher and entering the middleware chain aiohttp builds is work done again and
again to reach the same handler. The front door (:data:`crivline.wire.FRONT_DOOR`,
installed by :func:`proxy.app.create_app` when no request is traced) recognises them from
the request's raw target with a string comparison, gives the request the same route
match the router would, and runs :func:`proxy.middleware.around` (the middleware) around the
same handler: same answers, errors, CORS headers and metrics. Anything else — another
path or method, a query string, a percent-encoded or dot-segment key, an ``Expect``
header (its 100-continue is the router's route's business) — goes through the app as
before.

The one private aiohttp detail used is the request's ``_match_info`` slot (what the
router sets); ``tests/proxy/test_proxy_fastlane.py`` pins it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from proxy.middleware import around
from proxy.routes import ofrep, sdk

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

FLAGS = "/sdk/v1/flags"
SINGLE = "/ofrep/v1/evaluate/flags/"
# A key the router would take as it is: no percent-encoding, no dot segment (both are
# rewritten before routing), no query, no further segment. Others take the slow lane.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.~-]+")
_DOT_SEGMENTS = frozenset({".", ".."})


def matched(app: web.Application, name: str, method: str) -> web.UrlMappingMatchInfo:
    """The frozen route match the router gives every request of route ``name``: the same
    for each of them (nothing in it is per request for these routes; the OFREP key is
    handed to the handler directly)."""
    resource = app.router[name]
    for route in resource:
        if route.method == method:
            match = web.UrlMappingMatchInfo({}, route)
            match.add_app(app)
            match.freeze()
            return match
    raise LookupError(f"route {name} has no {method}")


def front_door(app: web.Application, fallback: Handler) -> Handler:
    flags_match = matched(app, "sdk_flags", hdrs.METH_GET)
    single_match = matched(app, "ofrep_flag", hdrs.METH_POST)
    flags = sdk.flags
    evaluate_one = ofrep.evaluate_one

    async def door(request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        if raw == FLAGS:
            if request.method == hdrs.METH_GET and hdrs.EXPECT not in request.headers:
                assert isinstance(request, web.Request)
                request._match_info = flags_match
                return await around(request, flags, "sdk_flags", False)
        elif raw.startswith(SINGLE):
            key = raw[len(SINGLE) :]
            if (
                request.method == hdrs.METH_POST
                and _PLAIN_KEY.fullmatch(key)
                and key not in _DOT_SEGMENTS
                and hdrs.EXPECT not in request.headers
            ):
                assert isinstance(request, web.Request)
                request._match_info = single_match
                return await around(request, lambda r: evaluate_one(r, key), "ofrep_flag", True)
        return await fallback(request)

    return door
