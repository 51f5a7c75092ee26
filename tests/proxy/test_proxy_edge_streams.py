"""The plan's cap on concurrent streams per environment, across the proxy processes of
one edge, through real proxies on the real Valkey: the cap counts every process's
streams, refuses with 429 in each route's shape, leaves open streams open, frees up
when a stream ends, and does not stay inflated by a process that died."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from support.edgekit import (
    TENANT,
    Feeder,
    Key,
    RunningProxy,
    SSEClient,
    StartProxy,
    eventually,
    flag,
    make_key,
    new_env,
)

from crivline.plans import EdgePlan, edge_plan_value
from proxy import appkeys
from proxy.edgestreams import EDGE_STREAMS, STALE_SECONDS, STREAM_LIMIT_PROBLEM

FLAGS: dict[str, Any] = {"f": flag({"on": True, "off": False}, "on")}
TWO_STREAMS = EdgePlan("small", None, 2, revision=1)


async def _edge(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, **settings: Any
) -> tuple[str, Key, Key, RunningProxy, RunningProxy]:
    env, server, client = new_env(), make_key("server"), make_key("client")
    await feeder.write(env, FLAGS, keys=[server, client])
    await feeder.synced()
    await redis.hset(feeder.keyspace.plans, TENANT, edge_plan_value(TWO_STREAMS))
    first, second = await start_proxy(**settings), await start_proxy(**settings)
    for proxy in (first, second):
        await eventually(
            lambda p=proxy: p[appkeys.PLANS].plan(TENANT) == TWO_STREAMS, what="the plan read"
        )
    return env, server, client, first, second


async def _sdk_stream(open_stream: Any, proxy: RunningProxy, key: Key) -> SSEClient:
    stream: SSEClient = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert stream.response.status == 200
    assert (await stream.next_event()).event == "put"
    return stream


async def _sees(proxy: RunningProxy, env: str, count: int) -> None:
    await eventually(
        lambda: proxy[EDGE_STREAMS].open_on_edge(env) == count,
        what=f"{count} open streams of the environment seen by the proxy",
    )


async def test_the_cap_counts_every_process_and_refuses_in_each_routes_shape(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, open_stream: Any
) -> None:
    env, server, client, first, second = await _edge(feeder, start_proxy, redis)
    on_first = await _sdk_stream(open_stream, first, server)
    on_second = await _sdk_stream(open_stream, second, server)
    await _sees(first, env, 2)
    await _sees(second, env, 2)

    async with first.session.get(first.url + "/sdk/v1/stream", headers=server.headers) as r:
        assert r.status == 429
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert int(r.headers["Retry-After"]) > 0
        body = orjson.loads(await r.read())
    assert body["type"] == STREAM_LIMIT_PROBLEM
    assert (body["status"], body["limit"], body["plan"]) == (429, 2, "small")

    bulk = await second.post("/ofrep/v1/evaluate/flags", json={}, headers=client.headers)
    events_url = (await bulk.json())["eventStreams"][0]["url"]
    async with second.session.get(events_url) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) > 0
        refused = orjson.loads(await r.read())
    assert refused["errorCode"] == "STREAM_LIMIT"
    assert "2 open streams" in refused["errorDetails"]

    # Streams already open stay open: a change still reaches both.
    await feeder.write(env, {"f": flag({"on": True, "off": False}, "off")})
    assert (await on_first.next_event()).event == "patch"
    assert (await on_second.next_event()).event == "patch"

    # One ends (on the other process): the first process admits again.
    on_second.close()
    await _sees(first, env, 1)
    again = await _sdk_stream(open_stream, first, server)
    assert again.response.status == 200


async def test_other_environments_and_quotas_off_are_not_capped(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, open_stream: Any
) -> None:
    env, server, _, first, second = await _edge(feeder, start_proxy, redis, quotas=False)
    streams = [await _sdk_stream(open_stream, p, server) for p in (first, second, first)]
    await _sees(second, env, 3)  # counted, not refused
    assert all(not s.eof for s in streams)


async def test_a_dead_process_cannot_leave_the_count_inflated(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, open_stream: Any
) -> None:
    env, server, _, first, second = await _edge(feeder, start_proxy, redis)
    key = feeder.keyspace.edge_streams
    # A process that was SIGKILLed holding two streams leaves its last heartbeat behind.
    last_beat = int((time.time() - 1) * 1000)
    await redis.hset(key, "killed", f"{last_beat}|".encode() + orjson.dumps({env: 2}))
    await _sees(first, env, 2)
    async with first.session.get(first.url + "/sdk/v1/stream", headers=server.headers) as r:
        assert r.status == 429
    # Once its heartbeat is older than STALE_SECONDS it no longer counts and is removed.
    stale = int((time.time() - STALE_SECONDS - 1) * 1000)
    await redis.hset(key, "killed", f"{stale}|".encode() + orjson.dumps({env: 2}))
    await _sees(first, env, 0)
    await eventually(lambda: _missing(redis, key, "killed"), what="the dead field removed")
    await _sdk_stream(open_stream, second, server)


async def _missing(redis: aioredis.Redis, key: str, field: str) -> bool:
    return not await redis.hexists(key, field)


async def test_a_graceful_stop_removes_the_process_streams_at_once(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, open_stream: Any
) -> None:
    env, server, _, first, second = await _edge(feeder, start_proxy, redis)
    await _sdk_stream(open_stream, first, server)
    await _sees(second, env, 1)
    process = first[EDGE_STREAMS].process
    await first.stop()
    assert not await redis.hexists(feeder.keyspace.edge_streams, process)
    await _sees(second, env, 0)
