"""The gate in front of every data endpoint: authenticate the key, then rate-limit it."""

from __future__ import annotations

from aiohttp import web

from crivline.errors import TooManyRequests
from proxy import appkeys
from proxy.auth import authenticate, resolve
from proxy.edge.keys import KeyInfo


async def authorize(request: web.Request, allowed: frozenset[str]) -> KeyInfo:
    app = request.app
    info = await authenticate(request, app[appkeys.KEYS], app[appkeys.METRICS], allowed)
    admit(request, info)
    return info


async def authorize_hash(request: web.Request, digest: str, allowed: frozenset[str]) -> KeyInfo:
    """The same gate for a key known by its hash (a stream ticket)."""
    app = request.app
    info = await resolve(digest, app[appkeys.KEYS], app[appkeys.METRICS], allowed)
    admit(request, info)
    return info


def admit(request: web.Request, info: KeyInfo) -> None:
    app = request.app
    limiter = app[appkeys.LIMITER]
    retry_after = limiter.admit(info.id)
    if retry_after:
        app[appkeys.METRICS].rate_limited.labels("requests_per_key").inc()
        raise TooManyRequests(
            f"rate limit of {limiter.limit} requests per second for this key exceeded "
            "(CRIVLINE_RATE_LIMIT)",
            headers={"Retry-After": str(retry_after)},
        )
