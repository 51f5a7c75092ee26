"""Rate limits (local decisions, shared Redis counters) and the stream hub's bounds."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from support.edgekit import PREFIX, TEST_OPTIONS, Feeder, StartProxy, flag, make_key, new_env
from support.waiting import eventually

from crivline.keyspace import Keyspace
from crivline.tasks import cancel_and_wait
from proxy.hub import SDK, Hub
from proxy.metrics import Metrics
from proxy.ratelimit import RateLimiter

T = 1_900_000_000.0  # a fixed second for deterministic windows


async def test_limit_is_shared_across_processes_through_redis(redis: aioredis.Redis) -> None:
    ks = Keyspace(PREFIX, "edge-1")
    a, b = RateLimiter(redis, ks, 20), RateLimiter(redis, ks, 20)
    assert all(a.admit("key", now=T + 0.1) == 0 for _ in range(15))
    await a.flush(at=T + 0.2)
    assert await redis.get(ks.rate_limit("key", int(T))) == b"15"
    await b.flush(at=T + 0.2)  # nothing to push yet
    assert all(b.admit("key", now=T + 0.3) == 0 for _ in range(5))
    await b.flush(at=T + 0.4)  # B learns the edge-wide total: 20
    assert b.admit("key", now=T + 0.5) == 1  # refused: retry after 1 s
    assert b.admit("other", now=T + 0.5) == 0  # keys are independent
    assert b.admit("key", now=T + 1.0) == 0  # a new second, a new window
    ttl = await redis.ttl(ks.rate_limit("key", int(T)))
    assert 0 < ttl <= 3


async def test_limit_holds_per_process_while_redis_is_unreachable() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, Keyspace(PREFIX, "edge-1"), 3)
    flusher = asyncio.create_task(limiter.run(0.01))
    try:
        await eventually(lambda: time.time() % 1 < 0.5, what="the start of a second")
        now = time.time()
        assert [limiter.admit("k", now=now) for _ in range(2)] == [0, 0]
        # The flush fails; the counts stay (as local ones) and the flusher keeps going.
        await eventually(
            lambda: all(w.pending == 0 for w in limiter._windows.values()),
            what="a failed flush handled",
        )
        assert [limiter.admit("k", now=now) for _ in range(2)] == [0, 1]
        assert not flusher.done()
    finally:
        await cancel_and_wait(flusher)
        await dead.aclose()


async def test_429_is_json_with_integer_retry_after(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    proxy = await start_proxy(rate_limit_per_second=2)
    await eventually(lambda: time.time() % 1 < 0.5, what="the start of a second")
    answers = [
        await proxy.post("/ofrep/v1/evaluate/flags/a", json={}, headers=key.headers)
        for _ in range(3)
    ]
    assert [r.status for r in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/json"
    body = await refused.json()
    assert body["errorCode"] == "RATE_LIMITED"
    assert "rate limit of 2 requests per second" in body["errorDetails"]


async def test_a_slow_client_is_disconnected_without_holding_up_the_others() -> None:
    hub = Hub(
        Metrics(),
        TEST_OPTIONS.with_(stream_buffer_bytes=1000),
        max_streams=10,
        max_streams_per_key=10,
    )
    fast = hub.open("env", "k1", SDK, 0, None)
    slow = hub.open("env", "k2", SDK, 0, None)
    aborted: list[bool] = []
    slow.abort = lambda: aborted.append(True)
    received: list[bytes] = []

    async def reader() -> None:
        while data := await fast.next():
            received.append(data)

    task = asyncio.create_task(reader())
    sent = []
    for version in range(1, 21):
        event = b"x" * 99 + b"\n"
        sent.append(event)
        hub.publish_sdk("env", version, None, event)
        await asyncio.sleep(0)  # let the fast reader run, as the event loop would
    assert slow.closed
    assert slow.close_reason == "overflow"
    assert aborted == [True]
    assert not fast.closed
    await eventually(lambda: b"".join(received) == b"".join(sent), what="everything delivered")
    fast.close("done")
    await task
    hub.release(fast)
    hub.release(slow)
    assert len(hub) == 0
