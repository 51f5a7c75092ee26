"""syncd's writer on a real 3-master/3-replica Valkey Cluster: each environment's script
runs in its own slot, announcements go out on sharded channels (SPUBLISH), the served
set and the key records are written beside the script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from support.valkeyha import ValkeyCluster
from test_syncd_store import ENV, flag, snapshot, write

from crivline import redisconn
from crivline.edge_store import EdgeStore
from crivline.keyspace import Keyspace
from crivline.snapshot import EdgeKey


@pytest.fixture(scope="module")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster.create(Path(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def client(valkey_cluster: ValkeyCluster) -> AsyncIterator[Redis]:
    redis = redisconn.client(redisconn.parse("CRIVLINE_REDIS_URL", valkey_cluster.url))
    await redis.flushall(target_nodes="primaries")
    try:
        yield redis
    finally:
        await redis.aclose()


async def next_message(pubsub: Any, within: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = await pubsub.get_sharded_message(timeout=0.2)
            if message is not None and message["type"] == "smessage":
                return {"channel": message["channel"].decode(), **orjson.loads(message["data"])}


async def test_apply_and_remove_on_a_cluster(client: Redis) -> None:
    keyspace = Keyspace("t:", "edge-1")
    store = EdgeStore(client, keyspace)
    assert store.cluster
    pubsub: Any = client.pubsub()
    env_channel, edge_channel = keyspace.environment_changes(ENV), keyspace.edge_changes
    await pubsub.ssubscribe(env_channel, edge_channel)
    try:
        key = EdgeKey("05" * 32, "k5", "server", None)
        assert await write(store, snapshot(1, {"f": flag(1)}, (key,)))
        first = [await next_message(pubsub), await next_message(pubsub)]
        assert {m["channel"] for m in first} == {env_channel, edge_channel}  # it joined
        assert all(m["e"] == ENV and m["v"] == 1 for m in first)
        assert await store.served() == {ENV}
        stored = await store.read_api_key("05" * 32)
        assert stored is not None
        assert stored.environment_id == ENV

        assert await write(store, snapshot(2, {"f": flag(2)}))  # the key is revoked
        second = await next_message(pubsub)
        assert (second["channel"], second["v"], second["keys"]) == (env_channel, 2, True)
        assert await store.read_api_key("05" * 32) is None
        assert await store.versions([ENV]) == {ENV: 2}
        refreshed = await store.read_refresh(ENV, deltas=5)  # one MULTI, one slot
        assert [d.version for d in refreshed.deltas] == [1, 2]

        assert not await write(store, snapshot(2, {"f": flag(3)}))  # not newer: refused
        assert await store.remove(ENV)
        removed = await next_message(pubsub)
        assert (removed["channel"], removed["v"], removed.get("removed")) == (env_channel, 0, True)
        assert await store.served() == set()
        assert await store.read_environment(ENV) is None
    finally:
        await pubsub.aclose()
