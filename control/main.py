"""``crivline control``: serve the control API until SIGTERM or SIGINT, then exit 0.

A port already in use or an unreachable database is a :class:`StartupError` (one line
from the CLI, no traceback).
"""

from __future__ import annotations

import asyncio
import logging

import uvloop

from control.app import create_app
from crivline import httpserver, logs
from crivline.logs import fields
from crivline.settings import Settings
from crivline.tracing import configure

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (default: until SIGTERM or SIGINT)."""
    tracing = configure("crivline-control", settings)
    try:
        # Setting the app up opens the database pool: DatabaseUnavailable from there.
        await httpserver.serve(
            create_app(settings, tracing),
            settings.host,
            settings.control_port,
            stop=stop,
            port_variable="CRIVLINE_CONTROL_PORT",
            listening=lambda: log.info(
                "control listening", extra=fields(host=settings.host, port=settings.control_port)
            ),
        )
    finally:
        await tracing.shutdown()


def run(settings: Settings) -> int:
    logs.configure("control", settings.log_level)
    settings.database_for("control")  # a missing URL is a one-line ConfigError, before anything
    uvloop.run(serve(settings))
    return 0
