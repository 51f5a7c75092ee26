"""Who is calling: the API key from ``Authorization: Bearer`` or ``X-API-Key``.

The key is hashed (SHA-256, as stored) and looked up in the in-process key index —
no Redis on the hot path (see :mod:`proxy.edge.keys`). Server keys (``crv_srv_``) may read
everything; client keys (``crv_cli_``) only evaluate (OFREP). Something that is not
shaped like one of our keys is refused before it is even hashed. Every refusal is a
JSON 401/403 and counted by reason.
"""

from __future__ import annotations

import functools
import time

from aiohttp import web

from crivline import tokens
from crivline.errors import Forbidden, ServiceUnavailable, Unauthorized
from proxy.edge.keys import EdgeIncomplete, KeyIndex, KeyInfo
from proxy.metrics import Metrics

SERVER = "server"
CLIENT = "client"
ANY_KIND = frozenset({SERVER, CLIENT})
SERVER_ONLY = frozenset({SERVER})

_PREFIXES = ("crv_srv_", "crv_cli_")
_MAX_KEY_LENGTH = 200


def presented_key(request: web.Request) -> str | None:
    headers = request.headers
    value = headers.get("Authorization")
    if value is not None:
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip() or None
        return None
    value = headers.get("X-API-Key")
    return value.strip() if value else None


@functools.lru_cache(maxsize=16_384)
def key_hash(key: str) -> str:
    """The stored hash of a presented key. Memoised per process: a key is presented on
    every request and hashing it was ~2.5% of a polling request's CPU. Only the hash is
    cached, never whether the key is valid — that is looked up in the key index every
    time, so revocation and expiry act at once; the bound holds a flood of distinct keys
    to a few MB."""
    return tokens.hex_digest(key)


def identify(request: web.Request, metrics: Metrics) -> str:
    """The hash of the key a request presents, or a refusal when it presents none or
    something that is not one of our keys."""
    key = presented_key(request)
    if key is None:
        metrics.auth_failures.labels("missing").inc()
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        )
    if len(key) > _MAX_KEY_LENGTH or not key.startswith(_PREFIXES):
        metrics.auth_failures.labels("malformed").inc()
        raise Unauthorized("this is not a Crivline API key (crv_srv_… or crv_cli_…)")
    return key_hash(key)


async def authenticate(
    request: web.Request, keys: KeyIndex, metrics: Metrics, allowed: frozenset[str]
) -> KeyInfo:
    return await resolve(identify(request, metrics), keys, metrics, allowed)


def known(digest: str, keys: KeyIndex, metrics: Metrics, allowed: frozenset[str]) -> KeyInfo | None:
    """:func:`resolve` without awaiting, when the key index can answer alone (the hot
    path: no coroutine); None when Redis must be asked."""
    found = keys.cached(digest)
    if isinstance(found, KeyInfo):
        metrics.cache_lookup("key", True)
        return _allowed(found, metrics, allowed)
    if found:
        return None
    metrics.cache_lookup("negative_key", True)
    return _allowed(None, metrics, allowed)


async def resolve(
    digest: str, keys: KeyIndex, metrics: Metrics, allowed: frozenset[str]
) -> KeyInfo:
    """The live key with SHA-256 ``digest``, allowed for this route, or a refusal."""
    info = known(digest, keys, metrics, allowed)
    if info is not None:
        return info
    metrics.cache_lookup("key", False)
    try:
        found = await keys.lookup(digest)
    except EdgeIncomplete:
        metrics.auth_failures.labels("edge_incomplete").inc()
        raise ServiceUnavailable(
            "cannot check this key yet: this edge is still loading its keys; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    except Exception:
        raise ServiceUnavailable(
            "cannot check this key now: it is not known to this proxy and Redis is unavailable",
            headers={"Retry-After": "1"},
        ) from None
    return _allowed(found, metrics, allowed)


def _allowed(info: KeyInfo | None, metrics: Metrics, allowed: frozenset[str]) -> KeyInfo:
    if info is None:
        metrics.auth_failures.labels("unknown").inc()
        raise Unauthorized("unknown or revoked API key")
    if info.expires_at is not None and info.expired(time.time()):
        metrics.auth_failures.labels("expired").inc()
        raise Unauthorized("this API key has expired")
    if info.kind not in allowed:
        metrics.auth_failures.labels("forbidden").inc()
        raise Forbidden(
            "client keys can only evaluate flags (OFREP); downloading the flag "
            "configuration needs a server key"
        )
    return info
