"""The Redis bus: after each commit, the NOTIFY payload again; a dead bus fails nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from support.control_testkit import Control, control_settings, start_control

from control.state import BUS
from crivline.embedded import free_port
from crivline.keyspace import PG_CHANNEL, Keyspace


@pytest.fixture
async def bus_control(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> AsyncIterator[Control]:
    settings = control_settings(database_url, bus_url=redis_url, key_prefix="t1:")
    running = await start_control(settings, db)
    yield running
    await running.client.close()


async def test_each_bump_is_published_after_commit(
    bus_control: Control, redis: aioredis.Redis, database_url: str
) -> None:
    listener = await asyncpg.connect(database_url)
    notified: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(PG_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    pubsub = redis.pubsub()
    await pubsub.subscribe(Keyspace("t1:").bus)
    try:
        await bus_control.project("shop", ("dev", "prod"))
        await bus_control.flag()  # bumps dev and prod
        expected = []
        async with asyncio.timeout(10):
            while len(expected) < 4:  # two environment creations, then the flag's two bumps
                expected.append(orjson.loads(await notified.get()))
        published = []
        async with asyncio.timeout(10):
            while len(published) < 4:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    published.append(orjson.loads(message["data"]))
        keys = ("e", "v", "t", "p")
        assert [[m[k] for k in keys] for m in published] == [[n[k] for k in keys] for n in expected]
        assert all(abs(m["at"] - n["at"]) < 1 for m, n in zip(published, expected, strict=True))
    finally:
        await pubsub.aclose()
        await listener.close()


async def test_a_dead_bus_never_fails_a_write(database_url: str, db: asyncpg.Connection) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    running = await start_control(control_settings(database_url, bus_url=dead), db)
    try:
        assert (await running.post("/projects", {"key": "shop"})).status == 201
        assert (await running.post("/projects/shop/environments", {"key": "dev"})).status == 201
        await running.app[BUS].drain(wait=10)  # the publishes have run (and failed)
        metrics = (await running.call("GET", "/metrics", auth=False)).raw.decode()
        assert 'crivline_control_bus_messages_total{result="failed"} 1.0' in metrics
    finally:
        await running.client.close()
