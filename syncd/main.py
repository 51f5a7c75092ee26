"""``crivline syncd``: build the clients from the settings and run the daemon under uvloop.

Start-up connects to Postgres and Redis with bounded, jittered retries (a stack whose
database starts a moment later is fine; one that never comes is an error, exit 1).
SIGTERM or SIGINT: the writes in flight finish, then exit 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import uvloop

from crivline import httpserver, logs
from crivline.logs import fields
from crivline.settings import Settings, redact_url
from crivline.tasks import cancel_and_wait
from crivline.tracing import Tracing, configure
from syncd.clients import CONNECT_DEADLINE, connect, database_url, listen_connection
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

log = logging.getLogger(__name__)
T = TypeVar("T")


async def serve(settings: Settings, *, connect_deadline: float = CONNECT_DEADLINE) -> int:
    """Connect, run the daemon until SIGTERM/SIGINT, clean up; the exit code."""
    config = SyncdConfig.from_settings(settings)
    database = database_url(settings)
    tracing = configure("crivline-syncd", settings)  # bad OTEL_* values: before connecting
    try:
        return await _serve(settings, config, database, connect_deadline, tracing)
    finally:
        await tracing.shutdown()


async def _serve(
    settings: Settings,
    config: SyncdConfig,
    database: str,
    connect_deadline: float,
    tracing: Tracing,
) -> int:
    stop = asyncio.Event()
    daemon: Daemon | None = None

    def on_signal() -> None:
        stop.set()
        if daemon is not None:
            daemon.request_stop()

    with httpserver.on_signals(on_signal):
        # A stop request while start-up still retries its connections ends it cleanly.
        clients = await _unless_stopped(connect(settings, config, connect_deadline), stop)
        if clients is None:
            log.info("syncd stopped before it could connect")
            return 0

        async def listen_connect() -> asyncpg.Connection:
            return await listen_connection(database, config)

        daemon = Daemon(
            config,
            primary=clients.primary,
            replica=clients.replica,
            redis=clients.redis,
            bus=clients.bus,
            listen_connect=None if config.bus_only else listen_connect,
            tracing=tracing,
        )
        if stop.is_set():
            daemon.request_stop()
        try:
            await daemon.run()  # a port that cannot be bound: StartupError
        except RuntimeError:
            return 1  # a task died of a bug; the daemon logged which and why
        finally:
            await clients.close()
        return 0


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """``await work``, or cancel it and return None if ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(task, stopped)
    if task.cancelled():
        return None
    return task.result()


def run(settings: Settings) -> int:
    """Entry point of ``crivline syncd``: 0 after a clean stop."""
    logs.configure("syncd", settings.log_level)
    log.info(
        "syncd starting",
        extra=fields(
            database=redact_url(database_url(settings)),
            bus_only=settings.syncd_bus_only,
            replica=redact_url(settings.replica_url.reveal()) if settings.replica_url else None,
            redis=redact_url(settings.require_redis()),
            bus=redact_url(settings.bus_url.reveal()) if settings.bus_url else None,
            edge=settings.edge_id,
            port=settings.syncd_port,
        ),
    )
    return uvloop.run(serve(settings))
