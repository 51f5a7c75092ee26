"""Fixtures for the syncd tests: an in-process daemon on the suite's real servers,
and a subscriber that records every announcement on the changes channel."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from support.roles import part_url
from syncd_testkit import INTERVAL, Announcements, Running, StartSyncd, wait_for

from crivline.keyspace import Keyspace
from crivline.snapshot import set_json_codecs
from syncd.clients import redis_options
from syncd.config import SyncdConfig
from syncd.daemon import Daemon
from syncd.scope import Scope


@pytest.fixture
async def start_syncd(database_url: str, redis_url: str) -> AsyncIterator[StartSyncd]:
    started: list[Running] = []

    async def start(
        *,
        scope: Scope | None = None,
        listen: bool = True,
        interval: float = INTERVAL,
        edge_id: str = "edge-1",
        replica_url: str | None = None,
        replica_wait: float = 2.0,
        bus: aioredis.Redis | None = None,
        ready: bool = True,
        **config: Any,
    ) -> Running:
        syncd_url = part_url(database_url, "syncd")
        primary = await asyncpg.create_pool(syncd_url, min_size=1, max_size=6, init=set_json_codecs)
        replica = None
        if replica_url is not None:
            replica = await asyncpg.create_pool(
                replica_url, min_size=0, max_size=4, init=set_json_codecs
            )

        async def listen_connect() -> asyncpg.Connection:
            return await asyncpg.connect(syncd_url, timeout=5)

        settings = SyncdConfig(
            keyspace=Keyspace("crivline:", edge_id),
            scope=scope or Scope(),
            reconcile_interval=interval,
            port=0,
            listen=listen,
            replica_wait=replica_wait,
            io_timeout=5.0,
            listen_probe_interval=1.0,
            **config,
        )
        # Configured as in production.
        redis = aioredis.Redis.from_url(redis_url, **redis_options(settings))
        daemon = Daemon(
            settings,
            primary=primary,
            replica=replica,
            redis=redis,
            bus=bus,
            listen_connect=listen_connect,
        )
        running = Running(daemon, asyncio.create_task(daemon.run()), primary, replica, redis)
        started.append(running)
        if ready:
            await wait_for(lambda: daemon.readiness()["ready"], 15, "syncd to be ready")
        return running

    try:
        yield start
    finally:
        for running in reversed(started):
            await running.stop()


@pytest.fixture
async def announcements(redis_url: str) -> AsyncIterator[Announcements]:
    seen = Announcements()
    channel = Keyspace().changes

    stopped = False

    async def follow() -> None:
        while not stopped:
            client = aioredis.from_url(redis_url)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                seen.subscribed_at.append(time.time())
                seen.subscribed.set()
                while not stopped:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        seen.messages.append(orjson.loads(message["data"]))
            except (aioredis.ConnectionError, OSError, aioredis.TimeoutError):
                seen.subscribed.clear()
                await asyncio.sleep(0.05)
            finally:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await pubsub.aclose()
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await client.aclose()

    task = asyncio.create_task(follow())
    await asyncio.wait_for(seen.subscribed.wait(), 5)
    try:
        yield seen
    finally:
        stopped = True
        task.cancel()
        await asyncio.wait({task})
