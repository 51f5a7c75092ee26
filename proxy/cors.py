"""CORS for browsers on the OFREP endpoints (client keys live in browsers).

Credentials travel in headers, never cookies, so any origin may call: responses carry
``Access-Control-Allow-Origin: *`` and expose the headers a client reads (``ETag``,
``Retry-After`` and ours). Preflights are answered by the middleware before routing,
authentication or any Redis access. The server-key endpoints (``/sdk/…``) send no CORS
headers at all: a browser page has no business holding a server key, and refusing it
there is one more way a leaked key shows up early.
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

ALLOW_HEADERS = "Content-Type, Authorization, X-API-Key, If-None-Match, Last-Event-ID"
EXPOSE_HEADERS = "ETag, Retry-After, Crivline-Version, Crivline-Stale"
ALLOW_METHODS = "GET, POST, OPTIONS"
MAX_AGE = "86400"

_SIMPLE = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Expose-Headers", EXPOSE_HEADERS),
)


PREFIX = "/ofrep/"  # the paths CORS applies to


def applies(path: str) -> bool:
    return path.startswith(PREFIX)


def is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def preflight() -> web.Response:
    return web.Response(
        status=204,
        headers=CIMultiDict(
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": MAX_AGE,
            }
        ),
    )


def decorate(response: web.StreamResponse) -> None:
    """Add the CORS headers to a response that has not been sent yet."""
    if response.prepared:
        return
    headers = response.headers
    for name, value in _SIMPLE:
        headers[name] = value
