"""The proxy on a real 3-master/3-replica Valkey Cluster: it SSUBSCRIBEs to the channel of
every environment its edge serves, follows an environment that joins the edge after it
started, and serves what syncd's writer put there."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from support.edgekit import Feeder, StartProxy, flag, make_key, new_env
from support.valkeyha import ValkeyCluster

from crivline import redisconn


@pytest.fixture(scope="module")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster.create(Path(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def redis_url(valkey_cluster: ValkeyCluster) -> str:
    """This module's edge Redis is the cluster, empty (feeder and start_proxy use it)."""
    client = redisconn.client(redisconn.parse("CRIVLINE_REDIS_URL", valkey_cluster.url))
    try:
        await client.flushall(target_nodes="primaries")
    finally:
        await client.aclose()
    return valkey_cluster.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = redisconn.client(redisconn.parse("CRIVLINE_REDIS_URL", redis_url))
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_proxy_follows_environments_on_their_shards(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    assert feeder.store.cluster
    first, key = new_env(), make_key("server")
    await feeder.write(first, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy()
    await proxy.loaded(first, 1)
    # Environments that join after the proxy started (announced on the edge's channel),
    # spread over the shards; then their changes, on their own channels.
    later = [new_env() for _ in range(6)]
    for env in later:
        await feeder.write(env, {"a": flag({"on": True}, "on")})
    for env in later:
        await proxy.loaded(env, 1)
    for env in [first, *later]:
        await feeder.write(env, {"a": flag({"on": False, "off": True}, "off")})
    for env in [first, *later]:
        await proxy.loaded(env, 2)
    response = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert response.status == 200
    assert response.headers["Crivline-Version"] == "2"
