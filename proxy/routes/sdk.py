"""Server-SDK endpoints: the full flag set for polling, and the SSE stream.

``GET /sdk/v1/flags`` answers the environment's flagd document exactly as syncd stored
it, with ``ETag: "<flag set version>-<content hash>"`` and 304 on ``If-None-Match``. The
flag set's version (environments.flags_version) is the version of the last write that
changed the flag set: versions that changed only keys or the plan keep the ETag.

``GET /sdk/v1/stream`` opens with ``retry:`` and ``event: put`` (the whole flag set,
``id:`` = the flag set's version), then sends ``event: patch`` per change of the flag
set (none for a version that changed only keys or the plan) with only what changed::

    {"version": 13, "base": 12, "flags": {key: definition}, "removed": [key],
     "evaluators": {name: fragment}, "removedEvaluators": [name], "metadata"?: {...}}

A client reconnecting with ``Last-Event-ID: N`` (a flag set's version, on the same axis
as the environment's versions) gets just the patches after N when they
form an unbroken chain (from memory, else from the delta log in Redis), or a ``put``.
Both need a server key.
"""

from __future__ import annotations

import time

from aiohttp import web

from crivline import httpserver, sse
from proxy import appkeys, headers, prerendered, streams
from proxy.access import authorize, evaluation
from proxy.auth import SERVER_ONLY
from proxy.edge.environments import Ahead, newest_etag
from proxy.edgestreams import EDGE_STREAMS, KEY_STREAMS
from proxy.fairness import FAIRNESS
from proxy.hub import SDK
from proxy.metering import today

routes = web.RouteTableDef()


@routes.get("/sdk/v1/flags", name="sdk_flags")
async def flags(request: web.Request) -> web.StreamResponse:
    gate = await evaluation(request, SERVER_ONLY, ofrep=False)
    if gate.refused is not None:
        return gate.refused
    app = gate.app
    if_none_match = request.headers.get("If-None-Match")
    hit = if_none_match is not None and httpserver.etag_matches(if_none_match, gate.state.etag)
    if if_none_match is not None and not hit:
        held = newest_etag(if_none_match)
        if (kept := await gate.held_newer(held, "sdk_flags", "poll_not_modified")) is not None:
            return kept
        hit = httpserver.etag_matches(if_none_match, gate.state.etag)
    state = gate.state
    out = headers.answer(state, app[appkeys.STATUS])
    out["ETag"] = state.etag
    if if_none_match is not None:
        app[appkeys.METRICS].conditional_request("sdk_flags", hit)
        if hit:
            gate.meter("poll_not_modified")
            return prerendered.respond(request, 304, out)
    gate.meter("poll")
    return prerendered.respond(request, 200, out, state.flag_set, httpserver.APPLICATION_JSON)


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
    day = today()  # the UTC day read once: the quota's and the meter's
    if (refused := app[appkeys.QUOTA].refusal(info.tenant, ofrep=False, day=day)) is not None:
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
    app[appkeys.METER].count(info.environment, "stream", info.tenant, day)
    options = app[appkeys.OPTIONS]
    client.send(sse.retry(options.retry_ms) + opening)
    if opening:
        kind = "put" if opening is state.put_event else "patch"
        app[appkeys.METRICS].events(SDK, kind, 1)
    out = headers.not_resumed(headers.served(state, app[appkeys.STATUS]), outcome)
    served = streams.serve(request, client, out, started)
    counted = app[KEY_STREAMS].held(info.key_hash, served)
    return await app[EDGE_STREAMS].held(info.environment, counted)
