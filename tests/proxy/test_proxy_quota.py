"""The daily quota at the edge, through a real proxy on the real Valkey: exactly the
plan's evaluations pass, the next is 429 until the UTC day ends or the plan grows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from support.edgekit import (
    TENANT,
    Feeder,
    Key,
    RunningProxy,
    StartProxy,
    eventually,
    flag,
    make_key,
    new_env,
)

from crivline.plans import EdgePlan, edge_plan_value, seconds_to_reset
from proxy import appkeys
from proxy.quota import QUOTA_PROBLEM

FLAGS: dict[str, Any] = {"f": flag({"on": True, "off": False}, "on")}
FREE = EdgePlan("free", 1000, 10, revision=1)


async def _serve(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis, plan: EdgePlan, **settings: Any
) -> tuple[RunningProxy, Key, Key]:
    env, server, client = new_env(), make_key("server"), make_key("client")
    await feeder.write(env, FLAGS, keys=[server, client])
    await feeder.synced()
    await redis.hset(feeder.keyspace.plans, TENANT, edge_plan_value(plan))  # as syncd does
    proxy = await start_proxy(**settings)
    await eventually(lambda: proxy[appkeys.PLANS].plan(TENANT) == plan, what="the plan read")
    return proxy, server, client


async def _status(
    proxy: RunningProxy, method: str, path: str, key: Key, headers: Any = None, **kw: Any
) -> int:
    sent = {**key.headers, **(headers or {})}
    async with proxy.session.request(method, proxy.url + path, headers=sent, **kw) as r:
        await r.read()
        return r.status


async def test_exactly_the_daily_limit_passes_then_429_until_the_day_ends(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis
) -> None:
    proxy, server, client = await _serve(feeder, start_proxy, redis, FREE)
    statuses: list[int] = []
    async with proxy.session.get(proxy.url + "/sdk/v1/flags", headers=server.headers) as r:
        etag = r.headers["ETag"]
        statuses.append(r.status)
    for i in range(999):  # every kind of evaluation request counts
        if i % 4 == 0:
            headers = {"If-None-Match": etag}
            statuses.append(await _status(proxy, "GET", "/sdk/v1/flags", server, headers=headers))
        elif i % 4 == 1:
            statuses.append(await _status(proxy, "GET", "/sdk/v1/flags", server))
        elif i % 4 == 2:
            body = {"context": {"targetingKey": str(i)}}
            statuses.append(
                await _status(proxy, "POST", "/ofrep/v1/evaluate/flags/f", client, json=body)
            )
        else:
            statuses.append(
                await _status(proxy, "POST", "/ofrep/v1/evaluate/flags", client, json={})
            )
    assert len(statuses) == 1000
    assert set(statuses) <= {200, 304}, {s for s in statuses if s not in (200, 304)}

    async with proxy.session.get(proxy.url + "/sdk/v1/flags", headers=server.headers) as r:
        assert r.status == 429
        assert r.content_type == "application/problem+json"
        problem = orjson.loads(await r.read())
        retry_after = int(r.headers["Retry-After"])
    now = datetime.now(UTC)
    assert abs(retry_after - seconds_to_reset(now)) <= 2
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert problem["type"] == QUOTA_PROBLEM
    assert (problem["status"], problem["limit"], problem["plan"]) == (429, 1000, "free")
    assert datetime.fromisoformat(problem["resetsAt"]) == midnight

    async with proxy.session.post(
        proxy.url + "/ofrep/v1/evaluate/flags/f", headers=client.headers, json={"context": {}}
    ) as r:
        assert r.status == 429
        assert "Retry-After" in r.headers
        body = orjson.loads(await r.read())
        assert body["errorCode"] == "QUOTA_EXCEEDED"
    assert await _status(proxy, "GET", "/sdk/v1/stream", server) == 429  # new streams too

    # The refused requests are not usage: 1000 evaluations in all reach Redis.
    async def all_flushed() -> bool:
        return await _pending(redis, feeder.keyspace.usage_pending) == 1000

    await eventually(all_flushed, what="exactly 1000 evaluations pending in Redis")

    # An upgrade lifts the limit within the proxy's plan read.
    upgraded = EdgePlan("pro", 1_000_000, 1000, revision=2)
    await redis.hset(feeder.keyspace.plans, TENANT, edge_plan_value(upgraded))

    async def passes() -> bool:
        return await _status(proxy, "GET", "/sdk/v1/flags", server) == 200

    await eventually(passes, within=3.0, what="a 200 within the plan read after the upgrade")


async def _pending(redis: aioredis.Redis, name: str) -> int:
    values = await redis.hvals(name)
    return sum(int(v) for v in values)


async def test_central_usage_counts_against_the_limit(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis
) -> None:
    plan = EdgePlan("free", 10, 10, revision=1)
    proxy, server, _ = await _serve(feeder, start_proxy, redis, plan)
    today = datetime.now(UTC).date().isoformat()
    # Other edges used 8 today, as control's last answer said (syncd writes this).
    await redis.hset(feeder.keyspace.usage_today, mapping={"day": today, TENANT: "8"})
    await eventually(
        lambda: proxy[appkeys.METER].used_today(TENANT, time.time()) == 8, what="the total read"
    )
    assert [await _status(proxy, "GET", "/sdk/v1/flags", server) for _ in range(3)] == [
        200, 200, 429,
    ]  # fmt: skip


async def test_quotas_off_meters_but_never_refuses(
    feeder: Feeder, start_proxy: StartProxy, redis: aioredis.Redis
) -> None:
    plan = EdgePlan("free", 2, 10, revision=1)
    proxy, server, _ = await _serve(feeder, start_proxy, redis, plan, quotas=False)
    assert [await _status(proxy, "GET", "/sdk/v1/flags", server) for _ in range(5)] == [200] * 5
    assert proxy[appkeys.METER].used_today(TENANT, time.time()) == 5
