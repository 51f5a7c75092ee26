"""``crivline syncd``: build the clients from the settings and run the daemon under uvloop.

Start-up connects to Postgres and Redis with bounded, jittered retries (a stack whose
database starts a moment later is fine; one that never comes is an error, exit 1).
SIGTERM or SIGINT: the writes in flight finish, then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

import asyncpg
import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline import logs
from crivline.errors import DatabaseUnavailable, StartupError
from crivline.logs import fields
from crivline.settings import Settings, redact_url
from crivline.snapshot import set_json_codecs
from syncd.backoff import retry
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

log = logging.getLogger("crivline.syncd")

CONNECT_DEADLINE = 60.0  # seconds of retries before start-up gives up
APPLICATION_NAME = "crivline-syncd"


@dataclass
class Clients:
    primary: asyncpg.Pool
    replica: asyncpg.Pool | None
    redis: Redis
    bus: Redis | None

    async def close(self) -> None:
        for pool in (self.primary, self.replica):
            if pool is not None:
                with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                    await asyncio.wait_for(pool.close(), 5)
        for client in (self.redis, self.bus):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()


def _pool(url: str, config: SyncdConfig, min_size: int) -> asyncpg.Pool:
    return asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=config.concurrency + 2,
        init=set_json_codecs,
        timeout=config.io_timeout,
        command_timeout=config.io_timeout,
        server_settings={"application_name": APPLICATION_NAME},
    )


def _redis(url: str, config: SyncdConfig) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=config.io_timeout,
        socket_connect_timeout=config.io_timeout,
        health_check_interval=30,
    )


async def connect(settings: Settings, config: SyncdConfig, deadline: float) -> Clients:
    database = settings.require_database()
    redis_url = settings.require_redis()
    try:
        primary = await retry(
            "postgres",
            lambda: _pool(database, config, min_size=1),
            retry_on=(OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError),
            deadline=deadline,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(database)}: {exc}") from None
    # The replica connects lazily: a replica that is down must not keep syncd from
    # starting (snapshot reads then go to the primary).
    replica = None
    if settings.replica_url is not None:
        replica = await _pool(settings.replica_url.reveal(), config, min_size=0)
    redis = _redis(redis_url, config)
    try:
        await retry(
            "redis",
            redis.ping,
            retry_on=(RedisError, OSError, TimeoutError),
            deadline=deadline,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        await Clients(primary, replica, redis, None).close()
        raise StartupError(f"cannot connect to {redact_url(redis_url)}: {exc}") from None
    bus = _redis(settings.bus_url.reveal(), config) if settings.bus_url is not None else None
    return Clients(primary, replica, redis, bus)


async def serve(settings: Settings, *, connect_deadline: float = CONNECT_DEADLINE) -> int:
    config = SyncdConfig.from_settings(settings)
    clients = await connect(settings, config, connect_deadline)
    database = settings.require_database()

    async def listen_connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            database,
            timeout=config.io_timeout,
            server_settings={"application_name": APPLICATION_NAME + "-listen"},
        )

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
