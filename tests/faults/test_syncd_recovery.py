"""What the fault suite found in syncd, pinned down by a deterministic test.

Reconciliation reads the versions in Postgres, then the versions in Redis. A write that
lands in between (this syncd's own worker, or the other syncd of the edge) made Redis
look *ahead* of Postgres — and syncd logged ``redis is ahead of postgres`` at ERROR and
counted ``crivline_syncd_version_ahead_total``, the signal of a restored backup. The
randomised fault run caught it at edge b (two syncd) under a write storm. Now a
version ahead is only reported after a second look at Postgres, read after Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from crivline.keyspace import Keyspace
from crivline.seed import create_tenant
from crivline.snapshot import set_json_codecs
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

KEYSPACE = Keyspace("race:", "edge-race")


async def bump(db: asyncpg.Connection, env: str) -> int:
    version: int = await db.fetchval("SELECT crivline_bump_environment($1)", env)
    return version


@pytest.fixture
async def environment(db: asyncpg.Connection) -> str:
    tenant = await create_tenant(db, "race")
    project = await db.fetchval(
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'app', 'app') RETURNING id",
        tenant.id,
    )
    env: str = await db.fetchval(
        """INSERT INTO environments (tenant_id, project_id, key, name)
           VALUES ($1, $2, 'prod', 'prod') RETURNING id::text""",
        tenant.id,
        project,
    )
    await bump(db, env)
    return env


@pytest.fixture
async def daemon(database_url: str, redis_url: str) -> AsyncIterator[Daemon]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, init=set_json_codecs)
    redis = aioredis.from_url(redis_url)
    config = SyncdConfig(keyspace=KEYSPACE, reconcile_interval=30.0, port=0, listen=False)
    running = Daemon(config, primary=pool, redis=redis)
    task = asyncio.create_task(running.run())
    try:
        deadline = time.monotonic() + 15
        while not running.readiness()["ready"]:
            assert time.monotonic() < deadline, running.readiness()
            await asyncio.sleep(0.02)
        yield running
    finally:
        await running.close()
        await task
        await pool.close()
        await redis.aclose()


def ahead_count(daemon: Daemon) -> float:
    value = daemon.metrics.registry.get_sample_value("crivline_syncd_version_ahead_total")
    return value or 0.0


async def test_a_write_between_the_two_reads_is_not_redis_ahead_of_postgres(
    db: asyncpg.Connection, daemon: Daemon, environment: str
) -> None:
    reconciler = daemon.reconciler
    scope = await reconciler._scope()  # Postgres read first …
    newer = await bump(db, environment)  # … a write commits and is applied …
    daemon.trigger_reconcile()
    deadline = time.monotonic() + 10
    while (await daemon.store.versions([environment]))[environment] < newer:
        assert time.monotonic() < deadline, "syncd did not apply the write"
        await asyncio.sleep(0.02)
    await reconciler._behind(scope)  # … then Redis is read: newer than the first read
    assert ahead_count(daemon) == 0


async def test_redis_really_ahead_of_postgres_is_still_reported(
    daemon: Daemon, environment: str, redis_url: str
) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await client.hset(KEYSPACE.environment(environment), "version", 1000)  # a restored PG
    finally:
        await client.aclose()
    await daemon.reconciler._behind(await daemon.reconciler._scope())
    assert ahead_count(daemon) == 1
