"""OFREP: single and bulk evaluation, and the ADR-0008 event stream.

``POST /ofrep/v1/evaluate/flags/{key}`` answers exactly the OFREP shapes: 200 with
``key, value (absent: use the code default), variant, reason, metadata``; 404
FLAG_NOT_FOUND; 400 ``{key, errorCode, errorDetails}``. Static flags answer bytes built
once per version (the evaluator prebuilds every result it can).

``POST /ofrep/v1/evaluate/flags`` answers every flag for one context with a weak ETag
over (flag-set content, context, ticket window): the same context against unchanged
flags gets 304, a different context never matches. The ETag starts with the flag set's
version (``W/"<flag set version>-<content hash>-<tag>"``: keys and plans do not move it),
so a client holding a newer version than this
process (from a sibling or another edge) is recognised: see
:meth:`proxy.edge.environments.EnvironmentCache.ahead`. Evaluated bodies are kept in a
small LRU, so a 200 for a context seen before is also only a lookup. The body
advertises ``eventStreams``: ``/ofrep/v1/events?ticket=…``, a ticket instead of the
key. A refetch that carries ``flagConfigEtag`` / ``flagConfigLastModified`` (from a
``refetchEvaluation``) waits briefly until this process has that change, and says 503
+ Retry-After rather than answer stale data as if it were fresh.

``GET /ofrep/v1/events`` sends ``event: message`` with ``{"type": "refetchEvaluation",
"etag": <flag-set ETag>, "lastModified": <commit epoch seconds>}`` and ``id:`` = the flag
set's version whenever the flag set changes. Tickets carry the version that was served, so a
stream opened after a later change is told to refetch at once; ``Last-Event-ID`` works
the same way.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime

import orjson
from aiohttp import web

from crivline import httpserver, sse, strictjson
from crivline.errors import ApiError, ServiceUnavailable, Unauthorized
from crivline.flags import ErrorCode, ofrep_flags_part
from proxy import appkeys, cors, forwarded, headers, prerendered, streams
from proxy.access import authorize, authorize_hash, evaluation
from proxy.auth import ANY_KIND
from proxy.context import parse_context, read_body
from proxy.edge.environments import Ahead, EnvironmentCache, EnvState, version_of_etag
from proxy.edge.keys import KeyInfo
from proxy.edgestreams import EDGE_STREAMS, KEY_STREAMS
from proxy.errors import api_error_response
from proxy.fairness import FAIRNESS
from proxy.hub import OFREP
from proxy.metering import today
from proxy.routes.sdk import last_event_id

routes = web.RouteTableDef()

EVENTS_PATH = "/ofrep/v1/events"


def _context(request: web.Request, body: bytes, key: str | None) -> dict[str, object]:
    options = request.app[appkeys.OPTIONS]
    return parse_context(
        body, key=key, max_depth=options.max_context_depth, max_nodes=options.max_context_nodes
    )


@routes.post("/ofrep/v1/evaluate/flags/{key}", name="ofrep_flag")
async def evaluate_flag(request: web.Request) -> web.StreamResponse:
    return await evaluate_one(request, request.match_info["key"])


async def evaluate_one(request: web.Request, key: str) -> web.StreamResponse:
    """The single evaluation of ``key`` (:mod:`proxy.fastlane` calls it with the key it
    took from the path itself)."""
    gate = await evaluation(request, ANY_KIND, ofrep=True, kind="ofrep_single")
    if gate.refused is not None:
        return gate.refused
    app = gate.app
    info, state = gate.info, gate.state
    out = headers.answer(state, app[appkeys.STATUS])
    try:
        context = _context(request, await _read_body(request), key)
    except ApiError as exc:
        return _refused(exc, out)
    result = app[FAIRNESS].evaluate(info.tenant, lambda: state.flags.evaluate(key, context))
    code = result.error_code
    status = 200 if code is None else 404 if code is ErrorCode.FLAG_NOT_FOUND else 400
    return prerendered.respond(request, status, out, result.to_json(), httpserver.APPLICATION_JSON)


@routes.post("/ofrep/v1/evaluate/flags", name="ofrep_bulk")
async def evaluate_all(request: web.Request) -> web.Response:
    gate = await evaluation(request, ANY_KIND, ofrep=True, kind="ofrep_bulk")
    if gate.refused is not None:
        return gate.refused
    app = gate.app
    info = gate.info
    if request.query_string:
        gate.state = await _honour_refetch_hints(request, app[appkeys.CACHE], gate.state)
    if_none_match = request.headers.get("If-None-Match")
    held = _newest_bulk_etag(if_none_match) if if_none_match else None
    # Never an older evaluation: a client ahead of this process keeps its own.
    if (kept := await gate.held_newer(held, "ofrep_bulk", None)) is not None:
        return kept
    state = gate.state
    out = headers.answer(state, app[appkeys.STATUS])
    try:
        body = await _read_body(request)
        return app[FAIRNESS].evaluate(info.tenant, lambda: _bulk(request, info, state, body, out))
    except ApiError as exc:
        return _refused(exc, out)


_BULK_ETAG = re.compile(r'W/"([0-9]{1,18})-[0-9a-f]{16}-[0-9a-f]{16}"')


def _newest_bulk_etag(if_none_match: str) -> tuple[int, str] | None:
    """The newest bulk ETag an If-None-Match names, as (version, ETag)."""
    best: tuple[int, str] | None = None
    for candidate in if_none_match.split(","):
        match = _BULK_ETAG.fullmatch(candidate.strip())
        if match is not None and (best is None or int(match[1]) > best[0]):
            best = int(match[1]), match[0]
    return best


async def _read_body(request: web.Request) -> bytes:
    app = request.app
    return await read_body(
        request, app[appkeys.SETTINGS].max_body_bytes, app[appkeys.OPTIONS].body_timeout_seconds
    )


def _refused(exc: ApiError, served: dict[str, str]) -> web.Response:
    """An OFREP error body that still says which version it was computed against."""
    response = api_error_response(exc)
    response.headers.update(served)
    return response


def _bulk(
    request: web.Request, info: KeyInfo, state: EnvState, body: bytes, out: dict[str, str]
) -> web.Response:
    app = request.app
    metrics = app[appkeys.METRICS]
    tickets = app[appkeys.TICKETS]
    now = time.time()
    window = tickets.expiry(now) if tickets.ready else 0
    context = _context(request, body, None)
    # The context's canonical form: the same context with its keys in another order is
    # the same ETag and the same cached answer.
    digest = hashlib.blake2b(strictjson.canonical(context), digest_size=16).digest()
    flags_part: bytes | None = None
    if state.time_dependent:
        flags_part = _evaluate(state, context)
        tag = hashlib.blake2b(flags_part + b"%d" % window, digest_size=8).hexdigest()
    else:
        tag = hashlib.blake2b(digest + b"%d" % window, digest_size=8).hexdigest()
    etag = f'W/"{state.content_text}-{state.content_hash}-{tag}"'
    out["ETag"] = etag
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        hit = httpserver.etag_matches(if_none_match, etag)
        metrics.conditional_request("ofrep_bulk", hit)
        if hit:
            return web.Response(status=304, headers=out)
    if flags_part is None:
        bulk_cache = app[appkeys.BULK_CACHE]
        flags_part = bulk_cache.get(state.content_hash, digest)
        metrics.cache_lookup("bulk", flags_part is not None)
        if flags_part is None:
            flags_part = _evaluate(state, context)
            bulk_cache.put(state.content_hash, digest, flags_part)
    answer = (
        flags_part
        + b',"metadata":'
        + state.bulk_metadata
        + _event_streams(request, info, state, now)
        + b"}"
    )
    return web.Response(body=answer, headers=out, content_type=httpserver.APPLICATION_JSON)


def _evaluate(state: EnvState, context: dict[str, object]) -> bytes:
    """``{"flags":[...]`` (left open for the rest of the body)."""
    results = state.flags.evaluate_all(context)
    return ofrep_flags_part(results)


_LINKS_MAX = 50_000


def _event_streams(request: web.Request, info: KeyInfo, state: EnvState, now: float) -> bytes:
    """The ``eventStreams`` member, built once per (key, version, ticket window, origin)."""
    app = request.app
    tickets = app[appkeys.TICKETS]
    origin = forwarded.origin(request, app[appkeys.SETTINGS])
    if origin is None:
        return b""  # no URL to advertise: the client polls instead
    links = app[appkeys.STREAM_LINKS]
    # The ticket names the flag set's version the evaluation was made against (like the
    # ETag and the events' ids): a stream opened with it is told to refetch only if the
    # flag set changed since, and waits on no edge for key or plan versions.
    cache_key = (info.key_hash, state.id, state.content_version, tickets.expiry(now), origin)
    cached = links.get(cache_key)
    if cached is not None:
        return cached
    ticket = tickets.issue(state.id, info.key_hash, state.content_version, now)
    if ticket is None:
        return b""  # no secret yet: clients poll instead (not cached: it will come)
    entry = {
        "type": "sse",
        "url": f"{origin}{EVENTS_PATH}?ticket={ticket}",
        "inactivityDelaySec": app[appkeys.OPTIONS].inactivity_delay_seconds,
    }
    part = b',"eventStreams":[' + orjson.dumps(entry) + b"]"
    if len(links) >= _LINKS_MAX:
        links.clear()  # old windows and versions: cheaper to rebuild than to track
    links[cache_key] = part
    return part


def _last_modified(raw: str) -> int | None:
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():
        return httpserver.decimal(raw)
    try:
        return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())
    except (ValueError, OverflowError):
        return None


async def _honour_refetch_hints(
    request: web.Request, cache: EnvironmentCache, state: EnvState
) -> EnvState:
    """A refetch triggered by an event names the change; serve it or say we can't yet."""
    query = request.query
    wanted = 0
    etag = query.get("flagConfigEtag")
    if etag:
        wanted = version_of_etag(etag) or 0
    modified = query.get("flagConfigLastModified")
    if modified:
        at = _last_modified(modified)
        if at is not None and at > int(state.committed_at):
            wanted = max(wanted, state.version + 1)
    if wanted <= state.version:
        return state
    timeout = request.app[appkeys.OPTIONS].refetch_wait_seconds
    newer = await cache.ensure_version(state.id, wanted, timeout)
    if newer is None:
        raise ServiceUnavailable(
            f"this proxy has not received the change the event announced (version {wanted}) "
            f"yet; it serves version {state.version}. Retry shortly.",
            headers={"Retry-After": "1"},
        )
    return newer


def _come_back_later(request: web.Request) -> web.Response:
    """This process cannot check the ticket yet (no secret, Redis unreachable). An
    EventSource gives up for good on any answer but 200 ``text/event-stream``, so answer
    an empty stream that only says when to reconnect: it will, with the same URL."""
    retry_ms = request.app[appkeys.OPTIONS].retry_ms
    body = sse.retry(retry_ms) + sse.comment("cannot check stream tickets yet; reconnect")
    response = web.Response(body=body, headers={**httpserver.SSE_HEADERS, "Retry-After": "1"})
    cors.decorate(response)
    return response


@routes.get(EVENTS_PATH, name="ofrep_events")
async def events(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    app = request.app
    raw_ticket = request.query.get("ticket")
    served_version: int | None = None
    if raw_ticket:
        tickets = app[appkeys.TICKETS]
        ticket = tickets.verify(raw_ticket, time.time())
        if ticket is None and not tickets.ready:
            # A fresh process whose start-up could not read the edge's secret: read it now.
            wait = app[appkeys.OPTIONS].redis_timeout
            if not await app[appkeys.TICKET_SECRET].ensure(wait):
                return _come_back_later(request)
            ticket = tickets.verify(raw_ticket, time.time())
        if ticket is None:
            app[appkeys.METRICS].auth_failures.labels("ticket").inc()
            raise Unauthorized(
                "stream ticket is invalid or expired; fetch the bulk evaluation again for a "
                "fresh eventStreams URL"
            )
        info = await authorize_hash(request, ticket.key_hash, ANY_KIND)
        if info.environment != ticket.environment:
            raise Unauthorized("stream ticket does not match its key")
        served_version = ticket.version
    else:
        info = await authorize(request, ANY_KIND)
    cache = app[appkeys.CACHE]
    state = await cache.obtain(info.environment)
    day = today()  # the UTC day read once: the quota's and the meter's
    if (refused := app[appkeys.QUOTA].refusal(info.tenant, ofrep=True, day=day)) is not None:
        return refused
    if (refused := app[EDGE_STREAMS].refusal(info, ofrep=True)) is not None:
        return refused
    since = last_event_id(request)
    version = since if since is not None else served_version
    outcome = Ahead.REACHED
    if version is None:
        version = state.version
    elif version > state.version:
        # The client saw a version this process does not hold yet: wait (bounded) for
        # it; an id from another history, or a wait that runs out, gets a refetch.
        wait = app[appkeys.OPTIONS].refetch_wait_seconds
        outcome, state = await cache.ahead(info.environment, version, wait)
        if outcome is not Ahead.REACHED:
            version = 0
    client = app[FAIRNESS].open_stream(info, OFREP, version)
    app[appkeys.METER].count(info.environment, "stream", info.tenant, day)
    opening = sse.retry(app[appkeys.OPTIONS].retry_ms)
    if client.version < state.content_version:  # later versions changed no flag
        opening += state.refetch_event
        app[appkeys.METRICS].events(OFREP, "refetchEvaluation", 1)
    client.version = max(client.version, state.version)
    client.send(opening)
    out = headers.not_resumed(headers.served(state, app[appkeys.STATUS]), outcome)
    served = streams.serve(request, client, out, started)
    counted = app[KEY_STREAMS].held(info.key_hash, served)
    return await app[EDGE_STREAMS].held(info.environment, counted)
