"""``crivline control``: serve the control API until SIGTERM or SIGINT, then exit 0.

A port already in use or an unreachable database is a :class:`StartupError` (one line
from the CLI, no traceback).
"""

from __future__ import annotations

import asyncio
import logging
import signal

import uvloop
from aiohttp import web

from control.app import create_app
from crivline import logs
from crivline.errors import StartupError
from crivline.listening import listen_failure
from crivline.logs import fields
from crivline.settings import Settings

log = logging.getLogger("control")
SHUTDOWN_TIMEOUT = 10.0


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (default: until SIGTERM or SIGINT)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        create_app(settings), handle_signals=False, access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )  # fmt: skip
    try:
        await runner.setup()  # opens the database pool: DatabaseUnavailable from here
        site = web.TCPSite(runner, settings.host, settings.control_port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                listen_failure(settings.host, settings.control_port, "CRIVLINE_CONTROL_PORT", exc)
            ) from None
        log.info("control listening", extra=fields(host=settings.host, port=settings.control_port))
        await stop.wait()
        log.info("control stopping")
    finally:
        await runner.cleanup()


def run(settings: Settings) -> int:
    logs.configure("control", settings.log_level)
    settings.require_database()  # a missing URL is a one-line ConfigError, before anything
    uvloop.run(serve(settings))
    return 0
