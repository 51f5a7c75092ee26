"""A real ``crivline proxy`` process SIGKILLed under load loses, of its usage counts,
only what it had not flushed to the edge Redis yet — at most its last flush interval
(one second) of requests — and counts nothing twice.

The proxy counts each request in memory and moves the counts into the edge Redis every
second. The test polls it without pause, watches the edge's counts grow over several
flushes, SIGKILLs it mid-stream and compares: every count Redis had before the kill is
still there, Redis never holds more than the requests the proxy answered (plus the one
in flight), and what is lost is printed as the measured figure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from fault_cluster import Part, wait_until
from support.edgekit import EDGE, PREFIX, Feeder, flag, make_key, new_env

from crivline.embedded import free_port
from crivline.keyspace import Keyspace

FLUSHES = 3  # flushes watched under load before the kill


async def _counted(redis: aioredis.Redis, keyspace: Keyspace, env: str) -> int:
    counts = await redis.hgetall(keyspace.usage)
    return sum(int(n) for name, n in counts.items() if name.decode().startswith(env))


@pytest.mark.timeout(90)
async def test_a_sigkilled_proxy_loses_only_its_unflushed_counts(
    redis_url: str, redis: aioredis.Redis, feeder: Feeder, tmp_path: Path
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.synced()
    keyspace = Keyspace(PREFIX, EDGE)
    port = free_port()
    proxy = Part(
        "proxy",
        "proxy",
        port,
        {
            "CRIVLINE_PROXY_PORT": str(port),
            "CRIVLINE_REDIS_URL": redis_url,
            "CRIVLINE_KEY_PREFIX": PREFIX,
            "CRIVLINE_EDGE_ID": EDGE,
            "CRIVLINE_RATE_LIMIT": "0",
        },
        tmp_path / "proxy.log",
    )
    answered = 0
    stop = asyncio.Event()

    async def load(session: aiohttp.ClientSession) -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                async with session.get(f"{proxy.url}/sdk/v1/flags", headers=key.headers) as r:
                    assert r.status == 200, await r.text()
                    answered += 1
            except aiohttp.ClientError:
                return  # the proxy is gone

    proxy.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                async with session.get(f"{proxy.url}/readyz") as r:
                    return r.status == 200

            await wait_until(ready, within=30, what="the proxy ready")
            loader = asyncio.create_task(load(session))
            seen: list[int] = []

            async def flushed_again() -> bool:
                now = await _counted(redis, keyspace, env)
                if not seen or now > seen[-1]:
                    seen.append(now)
                return len(seen) > FLUSHES

            await wait_until(flushed_again, within=30, what=f"{FLUSHES} flushes under load")
            before = await _counted(redis, keyspace, env)
            await proxy.kill()
            at_kill = answered
            stop.set()
            await loader
        after = await _counted(redis, keyspace, env)
    finally:
        await proxy.kill()

    assert after >= before > 0  # nothing that reached Redis is lost
    assert after <= at_kill + 1  # nothing counted twice (one request may be in flight)
    lost = at_kill - after
    rate = at_kill / max(1, len(seen))  # requests per watched flush, roughly per second
    print(f"\nproxy SIGKILL: {at_kill} answered, {after} counted, {lost} lost"
          f" (~{rate:.0f} requests per flush interval)")  # fmt: skip
    assert lost <= at_kill - before  # only what Redis did not have at the kill
