"""The gate in front of every data endpoint: authenticate the key, then rate-limit it;
and for evaluation requests the daily quota, metering, and a client that holds a newer
version than this process."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from crivline.errors import TooManyRequests
from proxy import appkeys, headers
from proxy.auth import authenticate, identify, known, resolve
from proxy.edge.environments import Ahead, EnvState
from proxy.edge.keys import KeyInfo
from proxy.metering import today


async def authorize(request: web.Request, allowed: frozenset[str]) -> KeyInfo:
    app = request.app
    info = await authenticate(request, app[appkeys.KEYS], app[appkeys.METRICS], allowed)
    admit(app, info)
    return info


async def authorize_hash(request: web.Request, digest: str, allowed: frozenset[str]) -> KeyInfo:
    """The same gate for a key known by its hash (a stream ticket)."""
    app = request.app
    info = await resolve(digest, app[appkeys.KEYS], app[appkeys.METRICS], allowed)
    admit(app, info)
    return info


def admit(app: web.Application, info: KeyInfo) -> None:
    limiter = app[appkeys.LIMITER]
    retry_after = limiter.admit(info.id)
    if retry_after:
        app[appkeys.METRICS].rate_limited.labels("requests_per_key").inc()
        raise TooManyRequests(
            f"rate limit of {limiter.limit} requests per second for this key exceeded "
            "(CRIVLINE_RATE_LIMIT)",
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(slots=True)
class Evaluation:
    """One evaluation request past the gate: its key, the environment as this process
    serves it, the UTC day it counts on (read from the clock once), and the quota's 429
    when the tenant's day is used up (then nothing is metered)."""

    request: web.Request
    info: KeyInfo
    state: EnvState
    day: int
    refused: web.Response | None
    app: web.Application

    def meter(self, kind: str) -> None:
        """Count this request as ``kind`` (poll, poll_not_modified, ofrep_single…)."""
        info = self.info
        self.app[appkeys.METER].count(info.environment, kind, info.tenant, self.day)

    async def held_newer(
        self, held: tuple[int, str] | None, route: str, kind: str | None
    ) -> web.Response | None:
        """A client that proved it holds ``held`` (version, ETag), newer than this process
        serves: wait (bounded) for that version. When it does not come in time, the 304
        that lets the client keep what it has — never an older body, never an older ETag
        — metered as ``kind`` (None: already metered). Else None, with ``state`` the one
        to answer from."""
        if held is None or held[0] <= self.state.version:
            return None
        app = self.app
        wait = app[appkeys.OPTIONS].refetch_wait_seconds
        outcome, self.state = await app[appkeys.CACHE].ahead(self.info.environment, held[0], wait)
        if outcome is not Ahead.NOT_YET:
            return None
        if kind is not None:
            self.meter(kind)
        out = headers.answer(self.state, app[appkeys.STATUS])
        out[headers.VERSION] = str(held[0])
        out["ETag"] = held[1]
        app[appkeys.METRICS].conditional_request(route, True)
        return web.Response(status=304, headers=out)


async def evaluation(
    request: web.Request, allowed: frozenset[str], *, ofrep: bool, kind: str | None = None
) -> Evaluation:
    """The gate of an evaluation request: key, rate limit, environment, quota; and, when
    ``kind`` is given and the quota admits it, the request metered as that.

    A key in the key index and an environment in memory (every request but a process's
    first few) are taken without awaiting anything: only a key or an environment that
    has to be read from Redis costs a coroutine."""
    app = request.app
    keys, metrics = app[appkeys.KEYS], app[appkeys.METRICS]
    digest = identify(request, metrics)
    info = known(digest, keys, metrics, allowed) or await resolve(digest, keys, metrics, allowed)
    admit(app, info)
    cache = app[appkeys.CACHE]
    state = cache.held(info.environment) or await cache.obtain(info.environment)
    day = today()
    refused = app[appkeys.QUOTA].refusal(info.tenant, ofrep=ofrep, day=day)
    admitted = Evaluation(request, info, state, day, refused, app)
    if refused is None and kind is not None:
        admitted.meter(kind)
    return admitted
