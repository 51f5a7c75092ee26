"""The operator status page: ``/status`` as HTML for a browser, JSON for scripts.

Off unless ``CRIVLINE_OPERATOR_TOKEN`` is set (404). With it:

- ``GET /status`` with ``Authorization: Bearer <token>`` answers JSON, or the HTML page
  when the client asks for ``text/html``. A browser cannot send that header when it
  navigates, so without it a browser gets a sign-in form (401): ``POST /status`` with
  the token sets a session cookie (HttpOnly, SameSite=Strict, path ``/status``, 12 h)
  that holds an HMAC derived from the token, never the token itself; changing the token
  ends every session. ``POST /status`` with ``logout`` ends it, on the server side too
  (the session's id is recorded as ended, here and in the edge Redis). Failed sign-ins
  are limited per client address (429 + ``Retry-After``); see
  :mod:`proxy.routes.status_session`.
- ``GET /status/data``: the same JSON, for the page, which polls it once a second — the
  page itself is a fixed document (inline CSS and JS under a hash-pinned CSP, no
  external assets, no data) that renders what this answers.

The JSON holds no secrets (no keys, key hashes, tickets, URLs or tokens): the state
``/readyz`` would answer; syncd's heartbeat and last reconciliation; every environment
with its version, flag count, ETag, commit/load times and open streams; open streams by
kind; client traffic — every route but the operator's (``/status*``, ``/metrics``,
``/healthz``, ``/readyz``) — as totals, per route and as rates over the last ten
seconds; and change propagation: the histogram's totals (as in ``/metrics``) plus
the recent changes one by one, from commit in Postgres to this process holding the
new version.

The sampler behind the rates and the chart is :mod:`proxy.routes.status_sampler`; the
browser session is :mod:`proxy.routes.status_session`; the documents are
:mod:`proxy.routes.status_assets`. Figures are per process: with ``--workers N`` each
worker reports its own (the page shows its pid).
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import os
import time
from typing import Any

import orjson
from aiohttp import web

from crivline.errors import NotFound, RequestTimeout, TooManyRequests, Unauthorized
from crivline.ioerrors import REDIS_ERRORS
from crivline.logs import describe, fields
from proxy import appkeys, forwarded
from proxy.auth import presented_key
from proxy.hub import OFREP, SDK
from proxy.routes.status_assets import LOGIN_HTML, PAGE_HTML, content_security_policy
from proxy.routes.status_sampler import SAMPLER, client_traffic, lag_totals, sum_totals
from proxy.routes.status_session import (
    COOKIE,
    SESSION_SECONDS,
    EndedSessions,
    Session,
    SignInLimit,
    session_cookie,
    session_of,
    token_matches,
)

routes = web.RouteTableDef()
log = logging.getLogger(__name__)


# -- the figures ----------------------------------------------------------------------------


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def snapshot(app: web.Application, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data (no secrets)."""
    now = time.time() if now is None else now
    hub, status, metrics = app[appkeys.HUB], app[appkeys.STATUS], app[appkeys.METRICS]
    sampler = app[SAMPLER]
    sampler.observe_changes()
    environments = [
        {
            "id": state.id,
            "flagSetId": state.flag_set_id,
            "version": state.version,
            "flags": len(state.flags),
            "etag": state.etag,
            "committedAt": state.committed_at,
            "appliedAt": state.applied_at,
            "loadedAt": state.loaded_at,
            "ageSeconds": _rounded(now - state.committed_at if state.committed_at else None, 1),
            "streams": {kind: hub.count(state.id, kind) for kind in (SDK, OFREP)},
        }
        for state in sorted(app[appkeys.CACHE].states(), key=lambda s: s.id)
    ]
    per_route = client_traffic(metrics)
    current = sum_totals(per_route)
    lag_count, lag_sum = lag_totals(metrics)
    by_kind = dict.fromkeys((SDK, OFREP), 0)
    for client in hub.clients():
        by_kind[client.kind] = by_kind.get(client.kind, 0) + 1
    return {
        "edge": app[appkeys.SETTINGS].edge_id,
        "pid": os.getpid(),
        "generatedAt": round(now, 3),
        "uptimeSeconds": round(now - sampler.started, 1),
        "state": status.verdict(now),
        "redis": "up" if status.redis_up else "down",
        "problems": status.problems(now),
        "staleSeconds": status.stale_seconds(now),
        "syncd": status.syncd_view(now),
        "environments": environments,
        "keys": len(app[appkeys.KEYS]),
        "streams": len(hub),
        "streamsByKind": by_kind,
        "bulkCacheEntries": len(app[appkeys.BULK_CACHE]),
        "traffic": {
            "requests": current.requests,
            "clientErrors": current.client_errors,
            "serverErrors": current.server_errors,
            "perSecond": sampler.rates(now, current),
            "routes": [
                {
                    "route": route,
                    "requests": totals.requests,
                    "clientErrors": totals.client_errors,
                    "serverErrors": totals.server_errors,
                }
                for route, totals in sorted(per_route.items())
            ],
            "series": sampler.series(),
        },
        "propagation": {
            "count": lag_count,
            "meanSeconds": _rounded(lag_sum / lag_count if lag_count else None, 4),
            "recent": [
                {
                    "at": round(c.at, 3),
                    "environment": c.environment,
                    "version": c.version,
                    "seconds": round(c.seconds, 4),
                }
                for c in sampler.changes
            ],
        },
    }


# -- access -----------------------------------------------------------------------------------


def _token(request: web.Request) -> str:
    token = request.app[appkeys.SETTINGS].operator_token
    if token is None:
        raise NotFound("the status page is off: set CRIVLINE_OPERATOR_TOKEN to enable it")
    return token.reveal()


_REDIS_FAILURES: tuple[type[BaseException], ...] = (*REDIS_ERRORS, TimeoutError)
ENDED = web.AppKey("status_ended_sessions", EndedSessions)
SIGN_IN = web.AppKey("status_sign_in_limit", SignInLimit)


def setup(app: web.Application) -> None:
    """The status page's state in ``app``: ended sessions, the sign-in limit."""
    app[ENDED] = EndedSessions()
    app[SIGN_IN] = SignInLimit()


def _address(request: web.Request) -> str:
    return forwarded.client_address(request, request.app[appkeys.SETTINGS])


def _check_limit(request: web.Request, now: float) -> int:
    return request.app[SIGN_IN].retry_after(_address(request), now)


def _too_many(retry: int) -> str:
    return (
        f"too many failed sign-ins from your address; try again in {retry} seconds"
        " (the operator token is CRIVLINE_OPERATOR_TOKEN)"
    )


async def _session_live(request: web.Request, session: Session) -> bool:
    """Not signed out, here or (as far as the edge Redis says) at any other process."""
    app = request.app
    if session in app[ENDED]:
        return False
    name = app[appkeys.KEYSPACE].status_session_ended(session.id)
    try:
        async with asyncio.timeout(app[appkeys.OPTIONS].redis_timeout):
            return not await app[appkeys.REDIS].exists(name)
    except _REDIS_FAILURES:
        return True  # Redis unreachable: only this process's sign-outs are known


async def _end_session(request: web.Request, session: Session) -> None:
    app, now = request.app, time.time()
    app[ENDED].end(session, now)
    name = app[appkeys.KEYSPACE].status_session_ended(session.id)
    try:
        async with asyncio.timeout(app[appkeys.OPTIONS].redis_timeout):
            await app[appkeys.REDIS].set(name, b"1", exat=session.expires)
    except _REDIS_FAILURES as exc:
        log.warning(
            "a status page sign-out was recorded in this process only",
            extra=fields(error=describe(exc)),
        )


async def _authorized(request: web.Request, token: str) -> bool:
    now = time.time()
    presented = presented_key(request)
    if presented is not None:
        if (retry := _check_limit(request, now)) > 0:
            raise TooManyRequests(_too_many(retry), headers={"Retry-After": str(retry)})
        if token_matches(token, presented):
            return True
        request.app[SIGN_IN].failed(_address(request), now)
        return False
    cookie = request.cookies.get(COOKIE)
    session = session_of(token, cookie, now) if cookie is not None else None
    return session is not None and await _session_live(request, session)


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


_NO_STORE = {"Cache-Control": "no-store"}


def _html(body: str, status: int = 200) -> web.Response:
    headers = {
        **_NO_STORE,
        "Content-Security-Policy": content_security_policy(),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=headers
    )


def _login(message: str = "", status: int = 401) -> web.Response:
    return _html(LOGIN_HTML.replace("{message}", html.escape(message)), status=status)


def _json(app: web.Application) -> web.Response:
    return web.Response(
        body=orjson.dumps(snapshot(app)), content_type="application/json", headers=_NO_STORE
    )


_UNAUTHORIZED = "the status page needs the operator token (CRIVLINE_OPERATOR_TOKEN)"


@routes.get("/status", name="status")
async def status_page(request: web.Request) -> web.Response:
    token = _token(request)
    if not await _authorized(request, token):
        if _wants_html(request) and presented_key(request) is None:
            return _login()
        raise Unauthorized(_UNAUTHORIZED)
    if _wants_html(request):
        return _html(PAGE_HTML)
    return _json(request.app)


@routes.get("/status/data", name="status_data")
async def status_data(request: web.Request) -> web.Response:
    if not await _authorized(request, _token(request)):
        raise Unauthorized(_UNAUTHORIZED)
    return _json(request.app)


@routes.post("/status", name="status_sign_in")
async def status_sign_in(request: web.Request) -> web.Response:
    """The sign-in form posts the token here; ``logout`` ends the session."""
    token = _token(request)
    seconds = request.app[appkeys.OPTIONS].body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):
            form = await request.post()
    except ValueError:  # not a form, a broken multipart body, bytes that are not UTF-8
        return _login("That form could not be read; sign in with the operator token.")
    except TimeoutError:
        raise RequestTimeout(f"the form did not arrive within {seconds:g} seconds") from None
    secure = forwarded.secure(request, request.app[appkeys.SETTINGS])
    response = web.Response(status=303, headers={"Location": request.path, **_NO_STORE})
    now = time.time()
    if "logout" in form:
        cookie = request.cookies.get(COOKIE)
        session = session_of(token, cookie, now) if cookie is not None else None
        if session is not None:
            await _end_session(request, session)
        response.del_cookie(COOKIE, path="/status")
        return response
    if (retry := _check_limit(request, now)) > 0:
        refused = _login(_too_many(retry).capitalize() + ".", status=429)
        refused.headers["Retry-After"] = str(retry)
        return refused
    presented = form.get("token")
    if not isinstance(presented, str) or not token_matches(token, presented.strip()):
        request.app[SIGN_IN].failed(_address(request), now)
        return _login("That is not the operator token.")
    response.set_cookie(
        COOKIE,
        session_cookie(token, now),
        max_age=SESSION_SECONDS,
        path="/status",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return response
