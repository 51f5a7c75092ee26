"""The in-process caches against real Valkey: single-flight loads, bounded key lookups."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from support.edgekit import TEST_OPTIONS, Feeder, flag, make_key, new_env

from proxy.edge.environments import EnvironmentCache
from proxy.edge.keys import KeyIndex
from proxy.edge.status import EdgeStatus
from proxy.hub import Hub
from proxy.metrics import Metrics


async def calls(redis: aioredis.Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_cold_environment_is_loaded_once_for_a_thousand_requests(
    feeder: Feeder, redis: aioredis.Redis
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    metrics = Metrics()
    keys = KeyIndex(redis, feeder.keyspace)
    hub = Hub(metrics, TEST_OPTIONS, max_streams=10, max_streams_per_key=10)
    status = EdgeStatus()
    status.redis_back()
    cache = EnvironmentCache(
        redis,
        feeder.keyspace,
        keys=keys,
        hub=hub,
        metrics=metrics,
        status=status,
        options=TEST_OPTIONS,
    )
    try:
        before = await calls(redis, "hgetall")
        states = await asyncio.gather(*(cache.obtain(env) for _ in range(1000)))
        assert {id(s) for s in states} == {id(states[0])}  # one object, built once
        assert states[0].version == 1
        # One HGETALL for the environment, one for its one key: not a thousand.
        assert await calls(redis, "hgetall") - before == 2
        assert metrics.cache.values[("environment", "miss")] == 1000
        assert await cache.obtain(env) is states[0]
        assert metrics.cache.values[("environment", "hit")] == 1
    finally:
        await cache.close()
        await keys.close()


async def test_a_flood_of_random_keys_costs_redis_a_bounded_number_of_lookups(
    redis: aioredis.Redis, feeder: Feeder
) -> None:
    await feeder.synced()  # a complete edge: an absent key is unknown
    keys = KeyIndex(redis, feeder.keyspace, miss_budget=20)
    try:
        before = await calls(redis, "hgetall")
        strangers = [make_key("server").edge.key_hash for _ in range(500)]
        found = await asyncio.gather(*(keys.lookup(h) for h in strangers))
        assert found == [None] * 500
        lookups = await calls(redis, "hgetall") - before
        assert 20 <= lookups <= 21  # the budget (plus what refilled meanwhile), not the flood
        # Those that were looked up are remembered as unknown; the rest were refused blind.
        assert sum(keys.cached(h) is False for h in strangers) == lookups
    finally:
        await keys.close()


async def test_a_key_record_outside_its_environments_key_set_is_not_honoured(
    feeder: Feeder, redis: aioredis.Redis
) -> None:
    """Key records sit in their own hash slots and are written beside the apply script:
    one left behind (syncd killed between the script and deleting a revoked key's record)
    must not let the key in — the environment's key set, written atomically with the
    environment, decides."""
    env, kept, revoked = new_env(), make_key("server"), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[kept, revoked])
    await feeder.synced()
    record = feeder.keyspace.api_key(revoked.edge.key_hash)
    fields = await redis.hgetall(record)
    await feeder.revoke(env, revoked)
    assert await redis.exists(record) == 0  # syncd deletes it after the script…
    await redis.hset(record, mapping=fields)  # …unless it died before that
    keys = KeyIndex(redis, feeder.keyspace)
    try:
        assert await keys.lookup(revoked.edge.key_hash) is None
        found = await keys.lookup(kept.edge.key_hash)
        assert found is not None
        assert found.environment == env
    finally:
        await keys.close()
