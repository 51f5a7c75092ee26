"""``crivline syncd``: build the clients from the settings and run the daemon under uvloop.

Start-up connects to Postgres and Redis with bounded, jittered retries (a stack whose
database starts a moment later is fine; one that never comes is an error, exit 1).
SIGTERM or SIGINT: the writes in flight finish, then exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
import uvloop

from crivline import logs
from crivline.errors import StartupError
from crivline.logs import fields
from crivline.settings import Settings, redact_url
from syncd.clients import CONNECT_DEADLINE, connect, listen_connection
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

log = logging.getLogger("crivline.syncd")


async def serve(settings: Settings, *, connect_deadline: float = CONNECT_DEADLINE) -> int:
    config = SyncdConfig.from_settings(settings)
    clients = await connect(settings, config, connect_deadline)
    database = settings.require_database()

    async def listen_connect() -> asyncpg.Connection:
        return await listen_connection(database, config)

    daemon = Daemon(
        config,
        primary=clients.primary,
        replica=clients.replica,
        redis=clients.redis,
        bus=clients.bus,
        listen_connect=listen_connect,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.run()
    except OSError as exc:
        raise StartupError(
            f"syncd cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    except RuntimeError:
        return 1  # a task died of a bug; the daemon logged which and why
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await clients.close()
    return 0


def run(settings: Settings) -> int:
    """Entry point of ``crivline syncd``: 0 after a clean stop."""
    logs.configure("syncd", settings.log_level)
    log.info(
        "syncd starting",
        extra=fields(
            database=redact_url(settings.require_database()),
            replica=redact_url(settings.replica_url.reveal()) if settings.replica_url else None,
            redis=redact_url(settings.require_redis()),
            bus=redact_url(settings.bus_url.reveal()) if settings.bus_url else None,
            edge=settings.edge_id,
            port=settings.syncd_port,
        ),
    )
    return uvloop.run(serve(settings))
