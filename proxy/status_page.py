"""The operator status page: ``/status`` as HTML for a browser, JSON for scripts.

Off unless ``CRIVLINE_OPERATOR_TOKEN`` is set (404). With it:

- ``GET /status`` with ``Authorization: Bearer <token>`` answers JSON, or the HTML page
  when the client asks for ``text/html``. A browser cannot send that header when it
  navigates, so without it a browser gets a sign-in form (401): ``POST /status`` with
  the token sets a session cookie (HttpOnly, SameSite=Strict, path ``/status``, 12 h)
  that holds an HMAC derived from the token, never the token itself; changing the token
  ends every session. ``POST /status`` with ``logout`` ends it.
- ``GET /status/data``: the same JSON, for the page, which polls it once a second — the
  page itself is a fixed document (inline CSS and JS under a hash-pinned CSP, no
  external assets, no data) that renders what this answers.

The JSON holds no secrets (no keys, key hashes, tickets, URLs or tokens): the state
``/readyz`` would answer; syncd's heartbeat and last reconciliation; every environment
with its version, flag count, ETag, commit/load times and open streams; open streams by
kind; client traffic — every route but the operator's (``/status*``, ``/metrics``,
``/healthz``, ``/readyz``) — as totals, per route and as rates over the last
:data:`RATE_WINDOW` seconds; and change propagation: the histogram's totals (as in
``/metrics``) plus the recent changes one by one, from commit in Postgres to this
process holding the new version.

:class:`StatusSampler` records what rates and the chart need: every
:data:`SAMPLE_SECONDS` (and whenever the page asks) the traffic totals, and each new
version of an environment this process already held. Figures are per process: with
``--workers N`` each worker reports its own (the page shows its pid).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from crivline.errors import NotFound, RequestTimeout, Unauthorized
from proxy import appkeys
from proxy.auth import presented_key
from proxy.environments import EnvironmentCache
from proxy.hub import OFREP, SDK
from proxy.metrics import Metrics
from proxy.status import EdgeStatus
from proxy.status_assets import LOGIN_HTML, PAGE_HTML, content_security_policy
from proxy.tasks import Tasks

routes = web.RouteTableDef()

SAMPLE_SECONDS = 1.0  # how often traffic totals are recorded for the rates
RATE_WINDOW = 10.0  # rates are averaged over this many seconds
HISTORY = 120  # samples kept (two minutes at one a second)
CHANGES_KEPT = 40  # propagation points kept for the chart
SESSION_SECONDS = 12 * 3600
COOKIE = "crivline_status"
OPERATOR_ROUTES = frozenset(
    {"healthz", "readyz", "metrics", "openapi", "status", "status_data", "status_sign_in"}
)

_SESSION_CONTEXT = b"crivline/proxy/status-session/v1"


# -- sampling -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    requests: float = 0.0
    client_errors: float = 0.0  # 4xx
    server_errors: float = 0.0  # 5xx


@dataclass(frozen=True, slots=True)
class Change:
    at: float  # when this process held the new version
    environment: str
    version: int
    seconds: float  # from the commit in Postgres


def client_traffic(metrics: Metrics) -> dict[str, Totals]:
    """Totals per route since the process started, operator routes left out."""
    per_route: dict[str, list[float]] = {}
    for (route, _method, status), count in metrics.requests.values.items():
        if route in OPERATOR_ROUTES:
            continue
        row = per_route.setdefault(route, [0.0, 0.0, 0.0])
        row[0] += count
        if status.startswith("4"):
            row[1] += count
        elif status.startswith("5"):
            row[2] += count
    return {route: Totals(*row) for route, row in per_route.items()}


def _sum(totals: Mapping[str, Totals]) -> Totals:
    return Totals(
        sum(t.requests for t in totals.values()),
        sum(t.client_errors for t in totals.values()),
        sum(t.server_errors for t in totals.values()),
    )


def lag_totals(metrics: Metrics) -> tuple[float, float]:
    """(count, sum) of the propagation lag histogram, as ``/metrics`` shows them."""
    count = total = 0.0
    for family in metrics.propagation_lag.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


class StatusSampler:
    """Traffic totals over time (for rates) and recent changes (for the chart)."""

    def __init__(self, metrics: Metrics, cache: EnvironmentCache) -> None:
        self._metrics = metrics
        self._cache = cache
        self.samples: deque[tuple[float, Totals]] = deque(maxlen=HISTORY)
        self.changes: deque[Change] = deque(maxlen=CHANGES_KEPT)
        self._versions: dict[str, int] = {}
        self.started = time.time()

    def tick(self, now: float) -> None:
        self.samples.append((now, _sum(client_traffic(self._metrics))))
        self.observe_changes()

    def observe_changes(self) -> None:
        """Record each environment that moved to a newer version since the last look.

        An environment seen for the first time (start-up, a cold load, a new environment)
        is no change: its commit may be arbitrarily old. So the chart shows the changes
        this process applied after it first saw the environment (within a second of
        loading it); the histogram's totals count every one."""
        seen: dict[str, int] = {}
        for state in self._cache.states():
            before = self._versions.get(state.id)
            if before is not None and state.version > before and state.committed_at:
                lag = max(0.0, state.loaded_at - state.committed_at)
                self.changes.append(Change(state.loaded_at, state.id, state.version, lag))
            seen[state.id] = state.version
        self._versions = seen

    def rates(self, now: float, current: Totals) -> dict[str, float]:
        """Per second over the last :data:`RATE_WINDOW` seconds (or since the first sample)."""
        base: tuple[float, Totals] | None = None
        for at, totals in self.samples:
            if now - at <= RATE_WINDOW + SAMPLE_SECONDS / 2:
                base = (at, totals)
                break
        if base is None or now - base[0] < 0.5:
            return {"requests": 0.0, "clientErrors": 0.0, "serverErrors": 0.0, "seconds": 0.0}
        at, old = base
        span = now - at
        return {
            "requests": round((current.requests - old.requests) / span, 3),
            "clientErrors": round((current.client_errors - old.client_errors) / span, 3),
            "serverErrors": round((current.server_errors - old.server_errors) / span, 3),
            "seconds": round(span, 1),
        }

    def series(self) -> list[list[float]]:
        """``[time, requests/s, errors/s]`` between consecutive samples (errors: 4xx + 5xx)."""
        out: list[list[float]] = []
        previous: tuple[float, Totals] | None = None
        for at, totals in self.samples:
            if previous is not None and at > previous[0]:
                span = at - previous[0]
                old = previous[1]
                errors = (
                    totals.client_errors
                    + totals.server_errors
                    - old.client_errors
                    - old.server_errors
                )
                out.append(
                    [
                        round(at, 3),
                        round((totals.requests - old.requests) / span, 3),
                        round(errors / span, 3),
                    ]
                )
            previous = (at, totals)
        return out


SAMPLER = web.AppKey("status_sampler", StatusSampler)


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the sampler's task, only while the status page is on."""
    if app[appkeys.SETTINGS].operator_token is None:
        yield
        return
    sampler = StatusSampler(app[appkeys.METRICS], app[appkeys.CACHE])
    app[SAMPLER] = sampler
    tasks = Tasks("status")

    async def run() -> None:
        while True:
            sampler.tick(time.time())
            await asyncio.sleep(SAMPLE_SECONDS)

    tasks.spawn(run(), "sampler")
    yield
    await tasks.close()


# -- the figures ----------------------------------------------------------------------------


def verdict(status: EdgeStatus, now: float) -> str:
    """What ``/readyz`` answers (without ``strict``)."""
    if not status.problems(now):
        return "ready"
    if status.ever_ready and status.warm:
        return "degraded"
    return "not ready"


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
    current = _sum(per_route)
    lag_count, lag_sum = lag_totals(metrics)
    reconciled = status.reconciled_at
    by_kind = dict.fromkeys((SDK, OFREP), 0)
    for client in hub.clients():
        by_kind[client.kind] = by_kind.get(client.kind, 0) + 1
    return {
        "edge": app[appkeys.SETTINGS].edge_id,
        "pid": os.getpid(),
        "generatedAt": round(now, 3),
        "uptimeSeconds": round(now - sampler.started, 1),
        "state": verdict(status, now),
        "redis": "up" if status.redis_up else "down",
        "problems": status.problems(now),
        "staleSeconds": status.stale_seconds(now),
        "syncd": {
            "heartbeat": status.syncd_alive,
            "completeSync": status.epoch is not None,
            "reconciledAt": reconciled,
            "snapshotAgeSeconds": _rounded(now - reconciled if reconciled else None, 1),
            "freshWithinSeconds": status.fresh_seconds,
        },
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _session_mac(token: str, expires: int) -> str:
    secret = token.encode("utf-8", "surrogateescape")
    key = hmac.new(secret, _SESSION_CONTEXT, hashlib.sha256).digest()
    return _b64(hmac.new(key, b"%d" % expires, hashlib.sha256).digest())


def session_cookie(token: str, now: float) -> str:
    expires = int(now) + SESSION_SECONDS
    return f"{expires}.{_session_mac(token, expires)}"


def session_valid(token: str, value: str, now: float) -> bool:
    expires_text, _, mac = value.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if now >= expires:
        return False
    expected = _session_mac(token, expires).encode()
    return hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected)


def _token(request: web.Request) -> str:
    token = request.app[appkeys.SETTINGS].operator_token
    if token is None:
        raise NotFound("the status page is off: set CRIVLINE_OPERATOR_TOKEN to enable it")
    return token.reveal()


def _token_matches(token: str, presented: str) -> bool:
    # surrogateescape: a header that is not UTF-8 compares as the bytes that were sent.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


def _authorized(request: web.Request, token: str) -> bool:
    presented = presented_key(request)
    if presented is not None:
        return _token_matches(token, presented)
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and session_valid(token, cookie, time.time())


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


def _login(message: str = "") -> web.Response:
    return _html(LOGIN_HTML.replace("{message}", html.escape(message)), status=401)


def _json(app: web.Application) -> web.Response:
    return web.Response(
        body=orjson.dumps(snapshot(app)), content_type="application/json", headers=_NO_STORE
    )


_UNAUTHORIZED = "the status page needs the operator token (CRIVLINE_OPERATOR_TOKEN)"


@routes.get("/status", name="status")
async def status_page(request: web.Request) -> web.Response:
    token = _token(request)
    if not _authorized(request, token):
        if _wants_html(request) and presented_key(request) is None:
            return _login()
        raise Unauthorized(_UNAUTHORIZED)
    if _wants_html(request):
        return _html(PAGE_HTML)
    return _json(request.app)


@routes.get("/status/data", name="status_data")
async def status_data(request: web.Request) -> web.Response:
    if not _authorized(request, _token(request)):
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
    secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
    response = web.Response(status=303, headers={"Location": request.path, **_NO_STORE})
    if "logout" in form:
        response.del_cookie(COOKIE, path="/status")
        return response
    presented = form.get("token")
    if not isinstance(presented, str) or not _token_matches(token, presented.strip()):
        return _login("That is not the operator token.")
    response.set_cookie(
        COOKIE,
        session_cookie(token, time.time()),
        max_age=SESSION_SECONDS,
        path="/status",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return response
