"""Metering through a real proxy: every SDK request counted by environment, day and kind,
moved to the edge Redis on the flush interval, kept across a Redis outage and flushed at
a graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from support.edgekit import (
    TENANT,
    TEST_OPTIONS,
    Feeder,
    SSEClient,
    StartProxy,
    eventually,
    flag,
    make_key,
    new_env,
)

from crivline.keyspace import Keyspace
from crivline.plans import EdgePlan, edge_plan_value
from crivline.usage import count_field
from proxy import appkeys
from proxy.metering import Meter, today

FLAGS: dict[str, Any] = {"f": flag({"on": True, "off": False}, "on")}


async def _counts(redis: aioredis.Redis, keyspace: Keyspace, env: str) -> dict[str, int]:
    day = datetime.now(UTC).date()
    kinds = ("poll", "poll_not_modified", "ofrep_single", "ofrep_bulk", "stream")
    values = await redis.hmget(keyspace.usage, [count_field(env, day, k) for k in kinds])
    return {k: int(v) for k, v in zip(kinds, values, strict=True) if v is not None}


async def test_each_kind_of_request_is_counted_exactly(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis
) -> None:
    env, other = new_env(), new_env()
    server, client, elsewhere = make_key("server"), make_key("client"), make_key("server")
    await feeder.write(env, FLAGS, keys=[server, client])
    await feeder.write(other, FLAGS, keys=[elsewhere])
    await feeder.synced()
    proxy = await start_proxy()
    etag = ""
    for _ in range(7):
        async with await proxy.get("/sdk/v1/flags", headers=server.headers) as resp:
            assert resp.status == 200
            etag = resp.headers["ETag"]
    for _ in range(5):
        headers = {**server.headers, "If-None-Match": etag}
        async with await proxy.get("/sdk/v1/flags", headers=headers) as resp:
            assert resp.status == 304
    for _ in range(4):
        async with await proxy.post(
            "/ofrep/v1/evaluate/flags/f", headers=client.headers, json={"context": {}}
        ) as resp:
            assert resp.status == 200
    for _ in range(3):
        async with await proxy.post(
            "/ofrep/v1/evaluate/flags", headers=client.headers, json={"context": {}}
        ) as resp:
            assert resp.status == 200
    async with await proxy.get("/sdk/v1/flags", headers=elsewhere.headers) as resp:
        assert resp.status == 200
    # Refused requests are not usage.
    async with await proxy.get("/sdk/v1/flags", headers=make_key("server").headers) as resp:
        assert resp.status in (401, 403)
    expected = {"poll": 7, "poll_not_modified": 5, "ofrep_single": 4, "ofrep_bulk": 3}
    await eventually(
        lambda: _counts(redis, feeder.keyspace, env), what="counts in Redis"
    )  # the first flush
    await eventually(
        _equal(redis, feeder.keyspace, env, expected), what=f"exactly {expected} in Redis"
    )
    assert await _counts(redis, feeder.keyspace, other) == {"poll": 1}
    assert proxy[appkeys.METER].unflushed() == 0


def _equal(redis: aioredis.Redis, keyspace: Keyspace, env: str, want: dict[str, int]) -> Any:
    async def check() -> bool:
        return await _counts(redis, keyspace, env) == want

    return check


async def test_counts_survive_a_redis_outage_and_a_graceful_stop_flushes(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis
) -> None:
    env, server = new_env(), make_key("server")
    await feeder.write(env, FLAGS, keys=[server])
    await feeder.synced()
    # A flush interval longer than the test: only the stop can move these counts.
    proxy = await start_proxy(TEST_OPTIONS.with_(usage_flush_seconds=3600.0))
    meter = proxy[appkeys.METER]
    for _ in range(6):
        async with await proxy.get("/sdk/v1/flags", headers=server.headers) as resp:
            assert resp.status == 200
    assert meter.unflushed(env) == 6
    # A flush that cannot reach Redis keeps what it held.
    healthy = meter._redis
    meter._redis = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        with pytest.raises((RedisError, OSError)):
            await meter.flush()
        assert meter.unflushed(env) == 6
    finally:
        await meter._redis.aclose()
        meter._redis = healthy
    await proxy.stop()
    assert await _counts(redis, feeder.keyspace, env) == {"poll": 6}


async def test_counts_being_flushed_still_count_against_the_quota(
    redis: aioredis.Redis,
) -> None:
    """While a flush is on its way to Redis, its evaluations are neither in the totals
    read back nor in the unflushed counts: the quota must still see them."""
    keyspace = Keyspace("m:", "edge-m")
    meter = Meter(redis, keyspace)
    for _ in range(5):
        meter.count("env-1", "poll", "tenant-1")
    await redis.execute_command("CLIENT", "PAUSE", "1000", "WRITE")  # hold the flush
    flushing = asyncio.create_task(meter.flush())
    try:
        await eventually(lambda: meter._in_flight, what="the flush under way")
        meter.count("env-1", "poll", "tenant-1")
        assert meter.used_today("tenant-1", time.time()) == 6
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await flushing
    assert meter.used_today("tenant-1", time.time()) == 6
    assert await redis.hvals(keyspace.usage_pending) == [b"5"]


async def test_a_stream_is_checked_and_counted_on_the_one_day_its_route_read(
    feeder: Feeder,
    start_proxy: StartProxy,
    redis: aioredis.Redis,
    open_stream: Callable[..., Awaitable[SSEClient]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stream route reads the UTC day once and hands it to both the quota and the
    meter (as the evaluation gate does). Today's quota is used up, but the stream routes
    read a day when it was not: both streams are admitted and counted on that day."""
    env, server, client = new_env(), make_key("server"), make_key("client")
    await feeder.write(env, FLAGS, keys=[server, client])
    await feeder.synced()
    await redis.hset(feeder.keyspace.plans, TENANT, edge_plan_value(EdgePlan("free", 1, 10, 1)))
    proxy = await start_proxy()
    await eventually(lambda: proxy[appkeys.PLANS].plan(TENANT), what="the plan read")
    async with await proxy.get("/sdk/v1/flags", headers=server.headers) as resp:
        assert resp.status == 200  # today's one evaluation
    async with await proxy.get("/sdk/v1/stream", headers=server.headers) as resp:
        assert resp.status == 429  # today's quota is used up
    earlier = today() - 2
    for module in ("proxy.routes.sdk", "proxy.routes.ofrep"):
        monkeypatch.setattr(f"{module}.today", lambda: earlier)
    streams = [
        await open_stream(proxy, "/sdk/v1/stream", headers=server.headers),
        await open_stream(proxy, "/ofrep/v1/events", headers=client.headers),
    ]
    assert [s.response.status for s in streams] == [200, 200]
    on = datetime.fromtimestamp(earlier * 86400, UTC).date()

    async def counted() -> tuple[bytes | None, bytes | None]:
        real = datetime.now(UTC).date()
        names = [count_field(env, on, "stream"), count_field(env, real, "stream")]
        found = await redis.hmget(feeder.keyspace.usage, names)
        return found[0], found[1]

    await eventually(lambda: _first(counted()), what="the streams counted")
    assert await counted() == (b"2", None)


async def _first(pair: Awaitable[tuple[Any, Any]]) -> Any:
    return (await pair)[0]
