"""The I/O clients syncd runs on, built from the settings with bounded, jittered retries.

Redis clients retry a failed command a few times quickly (a pooled connection that died
with a restarted server), then give up so syncd's own loops take over. That is safe for
the apply script: a retried apply whose first attempt did run is refused by the version
guard, so nothing is written or announced twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from crivline import redisconn
from crivline.errors import DatabaseUnavailable, StartupError
from crivline.ioerrors import POSTGRES_ERRORS, REDIS_ERRORS
from crivline.settings import Settings, redact_url
from crivline.snapshot import set_json_codecs
from syncd.backoff import retry
from syncd.config import SyncdConfig

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
                await _close_pool(pool)
        for client in (self.redis, self.bus):
            if client is not None:
                try:
                    await client.aclose()
                except REDIS_ERRORS:
                    pass


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: syncd's pooled connections
    never change their session (no SET, LISTEN, advisory lock or cursor; LISTEN has its
    own connection), and a transaction left open is still rolled back by asyncpg first.
    asyncpg's default reset is a statement — a round trip on every snapshot read."""


def postgres_pool(url: str, config: SyncdConfig, *, min_size: int = 1) -> asyncpg.Pool:
    """A pool for snapshot and version reads (awaiting it connects ``min_size``)."""
    return asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=config.concurrency + 2,
        init=set_json_codecs,
        reset=_keep_session,
        timeout=config.io_timeout,
        command_timeout=config.io_timeout,
        server_settings={"application_name": APPLICATION_NAME},
    )


async def listen_connection(url: str, config: SyncdConfig) -> asyncpg.Connection:
    """The dedicated LISTEN connection (never one from the pool)."""
    return await asyncpg.connect(
        url,
        timeout=config.io_timeout,
        server_settings={"application_name": APPLICATION_NAME + "-listen"},
    )


def redis_options(config: SyncdConfig) -> dict[str, Any]:
    """Connection options of syncd's Redis clients (edge Redis and bus)."""
    return dict(
        socket_timeout=config.io_timeout,
        socket_connect_timeout=config.io_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.01), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def database_url(settings: Settings) -> str:
    """Where syncd reads versions and snapshots: the primary, or on a bus-only edge the
    standby (which then needs a bus for its wake-ups)."""
    if settings.syncd_bus_only:
        settings.require_bus()
        return settings.require_replica()
    return settings.database_for("syncd")


async def connect(settings: Settings, config: SyncdConfig, deadline: float) -> Clients:
    """``primary`` is a bus-only edge's standby; no connection to the primary is opened."""
    database = database_url(settings)
    redis_url = settings.require_redis()
    try:
        primary = await retry(
            "postgres",
            lambda: postgres_pool(database, config),
            retry_on=POSTGRES_ERRORS,
            deadline=deadline,
        )
    except POSTGRES_ERRORS as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(database)}: {exc}") from None
    try:
        return await _connect_rest(settings, config, deadline, primary, redis_url)
    except BaseException:  # a failure or a stop request: leave nothing open behind us
        await _close_pool(primary)
        raise


async def _connect_rest(
    settings: Settings, config: SyncdConfig, deadline: float, primary: asyncpg.Pool, redis_url: str
) -> Clients:
    # The replica connects lazily: a replica that is down must not keep syncd from
    # starting (snapshot reads then go to the primary).
    replica = None
    if settings.replica_url is not None and not settings.syncd_bus_only:
        replica = await postgres_pool(settings.replica_url.reveal(), config, min_size=0)
    redis = redisconn.edge_client(settings, **redis_options(config))
    where = redisconn.describe(redisconn.parse("CRIVLINE_REDIS_URL", redis_url))

    async def ping() -> None:
        try:
            await redis.ping()
        except REDIS_ERRORS as exc:
            # Wrong credentials or an untrusted certificate: no retry will cure them.
            if (why := redisconn.refused(exc)) is not None:
                raise StartupError(f"cannot connect to {where}: {why}") from None
            raise

    try:
        await retry("redis", ping, retry_on=REDIS_ERRORS, deadline=deadline)
    except BaseException as exc:
        if replica is not None:
            await _close_pool(replica)
        await redis.aclose()
        if isinstance(exc, RedisError | OSError | TimeoutError):
            raise StartupError(f"cannot connect to {where}: {exc}") from None
        raise
    bus = None
    if settings.bus_url is not None:
        bus = redisconn.bus_client(settings, **redis_options(config))
    return Clients(primary, replica, redis, bus)


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(5):
            await pool.close()
    except POSTGRES_ERRORS:
        pool.terminate()
