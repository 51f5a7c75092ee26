"""Transactions around request handling: a read-only snapshot for reads, and for writes
one transaction holding the change, its audit rows, the version bumps (NOTIFY on
commit) and the Idempotency-Key record — then, after the commit, the bus message. Each
transaction is scoped to the caller's tenant first (:func:`bind_tenant`), for the
row-level security policies under the data layer's own tenant filters.

With tracing on, each write is one span (a child of the request's ``traceparent`` when
it has one); its trace context goes into every bump, so the edges' spans for applying
the change join this trace (see :mod:`crivline.tracing`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
from aiohttp import web
from asyncpg.pool import PoolConnectionProxy

from control import bodies, idempotency
from control.http import json_response
from control.state import BUS, METRICS, POOL, PRINCIPAL, TRACING
from control.store import TenantStore
from crivline.errors import ApiError, ServiceUnavailable
from crivline.tracing import Span, SpanKind, traceparent_of

ACQUIRE_TIMEOUT = 10.0
# The tenant of the transaction, for the row-level security policies (migration 0005):
# local to the transaction, so a pooled connection (or a transaction-pooling PgBouncer)
# never carries it into the next one.
_BIND_TENANT = "SELECT set_config('crivline.tenant_id', $1::uuid::text, true)"
# Deadlocks cannot happen between control's own writers (they lock in one order), but a
# serialization failure or a deadlock with something else is retried, not shown.
MAX_ATTEMPTS = 3


@dataclass(slots=True)
class Outcome:
    """What a write answers: status, JSON body and headers."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # What an Idempotency-Key replay answers, when it must differ (no secrets stored).
    replay_body: Any = None

    def response(self) -> web.Response:
        if self.status == 204:
            return web.Response(status=204, headers=self.headers)
        return json_response(self.body, status=self.status, headers=self.headers)


Operation = Callable[[TenantStore], Awaitable[Outcome]]


async def bind_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Scope the rest of the current transaction to ``tenant_id`` (its first statement)."""
    await conn.execute(_BIND_TENANT, tenant_id)


def connection(proxy: PoolConnectionProxy[Any]) -> asyncpg.Connection:
    """A pooled connection as the Connection it forwards every call to."""
    return cast(asyncpg.Connection, proxy)


@asynccontextmanager
async def reading(request: web.Request) -> AsyncIterator[TenantStore]:
    """A store on one consistent, read-only snapshot of the database."""
    caller = request[PRINCIPAL]
    async with request.app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as proxy:
        conn = connection(proxy)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await bind_tenant(conn, caller.tenant_id)
            yield TenantStore(conn, caller.tenant_id, caller.actor)


async def write(
    request: web.Request, operation: Operation, *, idempotent: bool = False
) -> web.Response:
    """Run ``operation`` in one transaction; publish its changes on the bus after commit."""
    route = request.match_info.route.resource
    with request.app[TRACING].span(
        "control write",
        headers=request.headers,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": route.canonical if route is not None else request.path,
            "crivline.tenant": request[PRINCIPAL].tenant_id,
        },
        expected=(ApiError,),
    ) as span:
        try:
            response = await _write(request, operation, idempotent, span)
        except ApiError as exc:
            if span is not None:
                span.set_attribute("http.response.status_code", exc.status)
            raise
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
        return response


async def _write(
    request: web.Request, operation: Operation, idempotent: bool, span: Span | None
) -> web.Response:
    caller = request[PRINCIPAL]
    traceparent = traceparent_of(span)
    app = request.app
    key = (
        idempotency.from_request(request, await bodies.read_bytes(request)) if idempotent else None
    )
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as proxy:
                conn = connection(proxy)
                async with conn.transaction():
                    await bind_tenant(conn, caller.tenant_id)
                    store = TenantStore(conn, caller.tenant_id, caller.actor, traceparent)
                    if key is not None:
                        stored = await idempotency.claim(conn, caller.tenant_id, key)
                        if stored is not None:
                            app[METRICS].idempotent_replays.inc()
                            return stored.response()
                    outcome = await operation(store)
                    if key is not None:
                        replay = (
                            outcome.body if outcome.replay_body is None else outcome.replay_body
                        )
                        await idempotency.record(
                            conn, caller.tenant_id, key, outcome.status, replay, outcome.headers
                        )
            break
        except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
            if attempt == MAX_ATTEMPTS:
                raise ServiceUnavailable(
                    "the write kept colliding with concurrent writes; retry it",
                    headers={"Retry-After": "1"},
                ) from None
            app[METRICS].write_retries.inc()
    metrics = app[METRICS]
    for action in store.actions:
        metrics.writes.labels(action).inc()
    metrics.environment_bumps.inc(len(store.changes))
    if span is not None:
        _describe(span, store)
    app[BUS].publish(store.changes)
    return outcome.response()


def _describe(span: Span, store: TenantStore) -> None:
    """What the write committed, on its span."""
    span.add_event("committed")
    span.set_attribute("crivline.actions", list(store.actions))
    span.set_attribute("crivline.environments", [c.environment_id for c in store.changes])
    span.set_attribute("crivline.versions", [c.version for c in store.changes])
