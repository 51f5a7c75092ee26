"""``crivline relay``: LISTEN on the primary (``CRIVLINE_DATABASE_URL``), publish on the bus
(``CRIVLINE_BUS_URL``); ``/healthz``, ``/readyz`` and ``/metrics`` on
``CRIVLINE_RELAY_PORT``. SIGTERM or SIGINT stops it (exit 0).

Start-up needs neither server to be up: the relay retries both with backoff, forever,
and says so in its log; a bad or missing URL stops it at once with one line.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import uvloop
from redis.asyncio import Redis

from crivline import httpserver, logs, redisconn
from crivline.keyspace import Keyspace
from crivline.logs import fields
from crivline.probes import health_body
from crivline.settings import Settings, redact_url
from crivline.tasks import cancel_and_wait
from relay.relay import Relay
from syncd.http import build_app

log = logging.getLogger(__name__)

APPLICATION_NAME = "crivline-relay"
IO_TIMEOUT = 10.0


def build(settings: Settings) -> tuple[Relay, Redis]:
    """The relay and its bus client, from the settings (nothing connects yet)."""
    database = settings.database_for("relay")
    settings.require_bus()
    bus = redisconn.bus_client(
        settings,
        socket_timeout=IO_TIMEOUT,
        socket_connect_timeout=IO_TIMEOUT,
        health_check_interval=30,
    )
    assert bus is not None  # required above

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            database,
            timeout=IO_TIMEOUT,
            command_timeout=IO_TIMEOUT,
            server_settings={"application_name": APPLICATION_NAME},
        )

    relay = Relay(
        connect,
        bus,
        Keyspace(settings.key_prefix),
        sweep_interval=settings.reconcile_interval,
        timeout=IO_TIMEOUT,
    )
    return relay, bus


async def serve(settings: Settings) -> int:
    relay, bus = build(settings)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None

    def health() -> dict[str, object]:
        reasons = []
        if stop.is_set():
            reasons.append("stopping")
        if task is not None and task.done():
            reasons.append("the relay loop has ended")
        return health_body(reasons)

    app = build_app(health, relay.readiness, relay.metrics.registry)
    try:
        runner = await httpserver.listen(
            app, settings.host, settings.relay_port, port_variable="CRIVLINE_RELAY_PORT"
        )
    except BaseException:
        await bus.aclose()
        raise
    with httpserver.on_signals(stop.set):
        task = asyncio.create_task(relay.run(), name="relay")
        stopping = asyncio.create_task(stop.wait(), name="relay-stop")
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(task, stopping)
            await runner.cleanup()
            await bus.aclose()
    if not task.cancelled() and task.exception() is not None:
        log.error("the relay died", exc_info=task.exception())
        return 1
    log.info("relay stopped", extra=fields(**relay.counts))
    return 0


def run(settings: Settings) -> int:
    """Entry point of ``crivline relay``."""
    logs.configure("relay", settings.log_level)
    log.info(
        "relay starting",
        extra=fields(
            database=redact_url(settings.database_for("relay")),
            bus=redact_url(settings.require_bus()),
            sweep_interval=settings.reconcile_interval,
            port=settings.relay_port,
        ),
    )
    return uvloop.run(serve(settings))
