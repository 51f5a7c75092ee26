"""Usage from the edge Redis to the central ``usage`` table through control, exactly once:
real Valkey, real control, real Postgres — including a syncd that dies at each point of
a flush and a Postgres that stops under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from support.control_testkit import control_settings

from control.app import create_app
from crivline.keyspace import F_TENANT, Keyspace
from crivline.seed import create_tenant, issue_edge_credential
from crivline.usage import count_field, pending_field
from syncd.usage import DeliveryFailed, UsageFlusher


@dataclass
class Edge:
    redis: aioredis.Redis
    keyspace: Keyspace
    control_url: str
    credential: str
    tenant_id: str
    env_id: str
    session: aiohttp.ClientSession

    def flusher(self) -> UsageFlusher:
        """A new flusher: what a restarted syncd would build."""
        return UsageFlusher(
            self.redis, self.keyspace, control_url=self.control_url, credential=self.credential
        )

    async def count(self, kind: str, n: int) -> None:
        """What the proxies do: add their local counts into the edge's counts hash."""
        day = datetime.now(UTC).date()
        await self.redis.hincrby(self.keyspace.usage, count_field(self.env_id, day, kind), n)


@pytest.fixture
async def edge(
    database_url: str, db: asyncpg.Connection, redis: aioredis.Redis
) -> AsyncIterator[Edge]:
    tenant = await create_tenant(db, "acme")
    project = await db.fetchval(
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'web', 'Web') RETURNING id",
        tenant.id,
    )
    env = await db.fetchval(
        """INSERT INTO environments (tenant_id, project_id, key, name)
           VALUES ($1, $2, 'prod', 'Prod') RETURNING id::text""",
        tenant.id,
        project,
    )
    keyspace = Keyspace("crivline:", "edge-1")
    # What syncd keeps for the environments it serves (the flusher asks their totals).
    await redis.sadd(keyspace.served, env)
    await redis.hset(keyspace.environment(env), F_TENANT, tenant.id)
    server = TestServer(create_app(control_settings(database_url)))
    await server.start_server()
    credential = await issue_edge_credential(db, "edge-1")
    async with aiohttp.ClientSession() as session:
        try:
            yield Edge(
                redis, keyspace, str(server.make_url("")).rstrip("/"), credential, tenant.id,
                env, session,
            )  # fmt: skip
        finally:
            await server.close()


async def _central(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT kind, count FROM usage ORDER BY kind")
    return {r["kind"]: r["count"] for r in rows}


async def test_counts_reach_the_usage_table_and_totals_come_back(
    edge: Edge, db: asyncpg.Connection
) -> None:
    await edge.count("poll", 600)
    await edge.count("ofrep_single", 25)
    await edge.count("stream", 4)
    flushed = await edge.flusher().flush(edge.session)
    assert flushed is not None
    assert (flushed.counted, flushed.duplicate) == (629, False)
    assert await _central(db) == {"ofrep_single": 25, "poll": 600, "stream": 4}
    today = await edge.redis.hgetall(edge.keyspace.usage_today)
    assert today == {
        b"day": datetime.now(UTC).date().isoformat().encode(), edge.tenant_id.encode(): b"625",
    }  # fmt: skip
    assert not await edge.redis.exists(edge.keyspace.usage, edge.keyspace.usage_batch)
    # Nothing new: nothing is sent, but the totals are still refreshed (other edges count).
    await db.execute("UPDATE usage SET count = count + 100 WHERE kind = 'poll'")
    assert await edge.flusher().flush(edge.session) is None
    assert await edge.redis.hget(edge.keyspace.usage_today, edge.tenant_id) == b"725"


async def test_a_syncd_killed_after_staging_resends_that_batch(
    edge: Edge, db: asyncpg.Connection
) -> None:
    await edge.count("poll", 10)
    staged = await edge.flusher().staged()  # ... and then this syncd died
    assert staged is not None
    await edge.count("poll", 5)  # the proxies go on counting meanwhile
    resent = await edge.flusher().flush(edge.session)
    assert resent is not None
    assert (resent.sequence, resent.counted) == (staged.sequence, 10)
    following = await edge.flusher().flush(edge.session)
    assert following is not None
    assert following.sequence > staged.sequence
    assert await _central(db) == {"poll": 15}


async def test_a_syncd_killed_after_control_added_the_batch_does_not_count_it_twice(
    edge: Edge, db: asyncpg.Connection
) -> None:
    await edge.count("ofrep_bulk", 7)
    staged = await edge.flusher().staged()
    assert staged is not None
    # Control added it, and the syncd died before it could drop the batch.
    body = {**staged.to_json(), "tenants": []}
    async with edge.session.post(
        f"{edge.control_url}/edge/v1/usage", data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {edge.credential}",
                 "Content-Type": "application/json"},
    ) as answer:  # fmt: skip
        assert answer.status == 200
    again = await edge.flusher().flush(edge.session)
    assert again is not None
    assert (again.sequence, again.duplicate) == (staged.sequence, True)
    assert await _central(db) == {"ofrep_bulk": 7}
    assert not await edge.redis.exists(edge.keyspace.usage_batch)


async def test_while_postgres_is_down_the_batch_waits_and_nothing_is_lost(
    edge: Edge, database_url: str, postgres: Any
) -> None:
    await edge.count("poll", 100)
    await asyncio.to_thread(postgres.stop)
    try:
        with pytest.raises(DeliveryFailed, match="503"):
            await edge.flusher().flush(edge.session)
        await edge.count("poll", 1)
        with pytest.raises(DeliveryFailed):
            await edge.flusher().flush(edge.session)
    finally:
        await asyncio.to_thread(postgres.start)
    # Control's pool finds the restarted Postgres; each batch is added once.
    results: list[Any] = []
    for _ in range(20):
        try:
            results.append(await edge.flusher().flush(edge.session))
        except DeliveryFailed:
            await asyncio.sleep(0.2)  # control's pool is still reconnecting
            continue
        if results[-1] is None:
            break
    conn = await asyncpg.connect(database_url)  # the fixture's connection died with it
    try:
        assert await _central(conn) == {"poll": 101}
    finally:
        await conn.close()


async def test_a_malformed_counts_field_is_skipped_not_fatal(
    edge: Edge, db: asyncpg.Connection
) -> None:
    await edge.redis.hset(edge.keyspace.usage, "garbage", 3)
    await edge.count("poll", 2)
    flushed = await edge.flusher().flush(edge.session)
    assert flushed is not None
    assert flushed.counted == 2
    assert await _central(db) == {"poll": 2}


async def test_pending_counts_of_days_before_yesterday_are_dropped(edge: Edge) -> None:
    today = datetime.now(UTC).date()
    stale = pending_field(edge.tenant_id, today - timedelta(days=2))
    kept = [pending_field(edge.tenant_id, today - timedelta(days=1)), pending_field(
        edge.tenant_id, today)]  # fmt: skip
    for name in (stale, *kept):
        await edge.redis.hset(edge.keyspace.usage_pending, name, 5)
    await edge.count("poll", 3)

    flushed = await edge.flusher().flush(edge.session)

    assert flushed is not None
    left = {k.decode() for k in await edge.redis.hkeys(edge.keyspace.usage_pending)}
    assert left == set(kept)
