"""The control app: ``create_app(settings)`` builds it; :mod:`control.main` serves it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import orjson
from aiohttp import web

from control import housekeeping
from control.auth import auth_middleware
from control.bus import Bus
from control.metrics import Metrics
from control.openapi import document
from control.problems import problem_middleware
from control.routes import operations
from control.routing import add_routes
from control.state import BUS, METRICS, OPENAPI, POOL, SETTINGS, TRACING
from crivline import httpserver, redisconn, wire
from crivline.errors import DatabaseUnavailable
from crivline.ioerrors import POSTGRES_ERRORS
from crivline.keyspace import Keyspace
from crivline.logs import fields
from crivline.settings import Settings, redact_url
from crivline.snapshot import set_json_codecs
from crivline.tasks import cancel_and_wait
from crivline.tracing import DISABLED, Tracing

log = logging.getLogger(__name__)

POOL_MAX_SIZE = 10
CONNECT_TIMEOUT = 10.0
BUS_TIMEOUT = 2.0  # a slow bus must not pile up publishes


async def _database(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].database_for("control")
    try:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=POOL_MAX_SIZE, init=set_json_codecs,
            timeout=CONNECT_TIMEOUT, command_timeout=60,
        )  # fmt: skip
    except POSTGRES_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {exc}") from None
    app[POOL] = pool
    try:
        yield
    finally:
        await pool.close()


async def _bus(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    client = None
    if settings.bus_url is not None:
        client = redisconn.bus_client(
            settings, socket_connect_timeout=BUS_TIMEOUT, socket_timeout=BUS_TIMEOUT
        )
        target = redisconn.parse("CRIVLINE_BUS_URL", settings.bus_url.reveal())
        log.info("publishing changes on the bus", extra=fields(url=redisconn.describe(target)))
    app[BUS] = Bus(client, Keyspace(settings.key_prefix).bus, app[METRICS])
    try:
        yield
    finally:
        await app[BUS].drain(BUS_TIMEOUT)
        if client is not None:
            await client.aclose()


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    task = asyncio.create_task(
        housekeeping.run(
            app[POOL], app[BUS], retention_days=settings.ledger_retention_days,
            interval=settings.housekeeping_interval,
        ),
        name="housekeeping",
    )  # fmt: skip
    try:
        yield
    finally:
        await cancel_and_wait(task)


def create_app(settings: Settings, tracing: Tracing = DISABLED) -> web.Application:
    """The control app. Its database pool and bus client open when it starts. ``tracing``
    is the caller's (it shuts it down)."""
    metrics = Metrics()
    app = web.Application(
        # Outermost first: every answer is measured and logged, every error becomes a
        # problem+json.
        middlewares=[
            metrics.middleware(),
            problem_middleware,
            auth_middleware,
        ],
        client_max_size=settings.max_body_bytes,
        # Idle and half-sent connections are closed (slowloris): see crivline.httpserver.
        handler_args=httpserver.handler_args(httpserver.IDLE_SECONDS),
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[TRACING] = tracing
    # Connections: the cap, the write timeout; aiohttp's own refusals as problem+json.
    app[wire.GATE] = gate = wire.Gate(
        max_connections=settings.max_connections, write_seconds=settings.write_timeout
    )
    metrics.registry.register(wire.GateCollector(gate, "crivline_control_"))
    routes = operations()
    add_routes(app, routes)
    app[OPENAPI] = orjson.dumps(document(routes))
    app.on_response_prepare.append(_private)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_bus)
    app.cleanup_ctx.append(_housekeeping)
    return app


async def _private(_request: web.Request, response: web.StreamResponse) -> None:
    """Every answer belongs to the token that asked: no shared cache may keep it for
    another, and a private one revalidates (ETag/If-None-Match, If-Match) every time."""
    response.headers.setdefault("Cache-Control", "private, no-cache")
    response.headers.setdefault("Vary", "Authorization")
