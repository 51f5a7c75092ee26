"""Server-SDK endpoints: the full flag set for polling, and the SSE stream.

``GET /sdk/v1/flags`` answers the environment's flagd document exactly as syncd stored
it, with ``ETag: "<version>-<content hash>"`` and 304 on ``If-None-Match``.

``GET /sdk/v1/stream`` opens with ``retry:`` and ``event: put`` (the whole flag set,
``id:`` = version), then sends ``event: patch`` per version with only what changed::

    {"version": 13, "base": 12, "flags": {key: definition}, "removed": [key],
     "evaluators": {name: fragment}, "removedEvaluators": [name], "metadata"?: {...}}

A client reconnecting with ``Last-Event-ID: N`` gets just the patches after N when they
form an unbroken chain (from memory, else from the delta log in Redis), or a ``put``.
Both need a server key.
"""

from __future__ import annotations

import time

from aiohttp import web

from crivline import httpserver, sse
from proxy import appkeys, headers, streams
from proxy.access import authorize
from proxy.auth import SERVER_ONLY
from proxy.edge.environments import Ahead, EnvState, newest_etag
from proxy.edgestreams import EDGE_STREAMS
from proxy.fairness import FAIRNESS
from proxy.hub import SDK

routes = web.RouteTableDef()


@routes.get("/sdk/v1/flags", name="sdk_flags")
async def flags(request: web.Request) -> web.Response:
    info = await authorize(request, SERVER_ONLY)
    app = request.app
    cache = app[appkeys.CACHE]
    state = await cache.obtain(info.environment)
    if (refused := app[appkeys.QUOTA].refusal(info.tenant, ofrep=False)) is not None:
        return refused
    if_none_match = request.headers.get("If-None-Match")
    hit = if_none_match is not None and httpserver.etag_matches(if_none_match, state.etag)
    if if_none_match is not None and not hit:
        held = newest_etag(if_none_match)
        if held is not None and held[0] > state.version:
            # The client holds a newer version (from a sibling process or another edge).
            wait = app[appkeys.OPTIONS].refetch_wait_seconds
            outcome, state = await cache.ahead(info.environment, held[0], wait)
            if outcome is Ahead.NOT_YET:
                app[appkeys.METER].count(info.environment, "poll_not_modified", info.tenant)
                return _keep_what_you_have(request, held, state)
            hit = httpserver.etag_matches(if_none_match, state.etag)
    out = headers.served(state, app[appkeys.STATUS])
    out["ETag"] = state.etag
    out["Cache-Control"] = "no-cache"
    if if_none_match is not None:
        app[appkeys.METRICS].conditional_request("sdk_flags", hit)
        if hit:
            app[appkeys.METER].count(info.environment, "poll_not_modified", info.tenant)
            return web.Response(status=304, headers=out)
    app[appkeys.METER].count(info.environment, "poll", info.tenant)
    return web.Response(body=state.flag_set, headers=out, content_type="application/json")


def _keep_what_you_have(
    request: web.Request, held: tuple[int, str], state: EnvState
) -> web.Response:
    """304 for the version the client holds, which this process could not load in time:
    it keeps its copy and polls again — never an older body, never an older ETag."""
    out = headers.served(state, request.app[appkeys.STATUS])
    out[headers.VERSION] = str(held[0])
    out["ETag"] = held[1]
    out["Cache-Control"] = "no-cache"
    request.app[appkeys.METRICS].conditional_request("sdk_flags", True)
    return web.Response(status=304, headers=out)


def last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    return httpserver.decimal(raw.strip())


@routes.get("/sdk/v1/stream", name="sdk_stream")
async def stream(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    info = await authorize(request, SERVER_ONLY)
    app = request.app
    cache = app[appkeys.CACHE]
    state = await cache.obtain(info.environment)
    if (refused := app[appkeys.QUOTA].refusal(info.tenant, ofrep=False)) is not None:
        return refused
    if (refused := app[EDGE_STREAMS].refusal(info, ofrep=False)) is not None:
        return refused
    since = last_event_id(request)
    outcome = Ahead.REACHED
    if since is not None and since > state.version:
        # Resuming from a version this process does not hold yet: wait (bounded) for
        # it; an id from another history, or a wait that runs out, gets a put.
        wait = app[appkeys.OPTIONS].refetch_wait_seconds
        outcome, state = await cache.ahead(info.environment, since, wait)
        if outcome is not Ahead.REACHED:
            since = None
    if since is None:
        opening, version = state.put_event, state.version
    else:
        opening, version = await cache.catch_up(info.environment, since)
        state = cache.get(info.environment) or state
    # From here to hub.open nothing awaits: no event can slip between the two.
    client = app[FAIRNESS].open_stream(info, SDK, version)
    app[appkeys.METER].count(info.environment, "stream")
    options = app[appkeys.OPTIONS]
    client.send(sse.retry(options.retry_ms) + opening)
    if opening:
        kind = "put" if opening is state.put_event else "patch"
        app[appkeys.METRICS].events(SDK, kind, 1)
    out = headers.not_resumed(headers.served(state, app[appkeys.STATUS]), outcome)
    served = streams.serve(request, client, out, started)
    return await app[EDGE_STREAMS].held(info.environment, served)
