"""The operator's commands against a real stack with two edges, one deliberately behind
(its syncd neither listens nor reconciles for an hour): ``crivline status`` shows where a
change stopped, ``POST /admin/resync`` on that edge's syncd brings it, and answers when
it is done."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from support.edgekit import TEST_OPTIONS, Central, StartProxy
from support.waiting import eventually

from crivline.keyspace import Keyspace
from crivline.snapshot import set_json_codecs
from proxy import appkeys
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

TOKEN = "operator-token-for-tests"
B_PREFIX, B_EDGE = "b:", "edge-b"
OPTIONS = TEST_OPTIONS.with_(presence_seconds=0.1)


@pytest.fixture
async def lagging_syncd(database_url: str, redis_url: str) -> AsyncIterator[Daemon]:
    """Edge B's syncd: a full sync at start, then nothing on its own for an hour."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, init=set_json_codecs)
    client = aioredis.from_url(redis_url)
    daemon = Daemon(
        SyncdConfig(
            keyspace=Keyspace(B_PREFIX, B_EDGE),
            reconcile_interval=3600.0,
            heartbeat_ttl=60.0,
            port=0,
            listen=False,
            io_timeout=2.0,
            operator_token=TOKEN,
        ),
        primary=pool,
        redis=client,
    )
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        await daemon.close()
        await task
        await pool.close()
        await client.aclose()


async def status(
    crivline_cmd: list[str], database_url: str, redis_url: str, prefix: str, edge: str
) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(
        CRIVLINE_DATABASE_URL=database_url,
        CRIVLINE_REDIS_URL=redis_url,
        CRIVLINE_KEY_PREFIX=prefix,
        CRIVLINE_EDGE_ID=edge,
    )
    outputs = []
    for extra in (["--json"], []):
        proc = await asyncio.create_subprocess_exec(
            *crivline_cmd, "status", *extra, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        outputs.append(out)
    return orjson.loads(outputs[0]), outputs[1].decode()


async def resync(daemon: Daemon, body: Any = None, **headers: str) -> tuple[int, Any, str]:
    url = f"http://127.0.0.1:{daemon.port}/admin/resync"
    data = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else None
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, orjson.loads(await response.read()), response.content_type


async def test_status_finds_the_edge_that_is_behind_and_resync_brings_it(
    central: Central,
    lagging_syncd: Daemon,
    start_proxy: StartProxy,
    database_url: str,
    redis_url: str,
    crivline_cmd: list[str],
) -> None:
    await central.shop()
    first = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="on"
    )
    env = await central.environment_id("shop", "prod")
    live = await start_proxy(OPTIONS)
    await live.loaded(env, first)
    lagging_syncd.trigger_reconcile()  # its first pass may have run before the writes
    await eventually(
        lambda: lagging_syncd.readiness()["ready"], within=15, what="edge B's syncd ready"
    )
    behind = await start_proxy(OPTIONS, key_prefix=B_PREFIX, edge_id=B_EDGE)
    await behind.loaded(env, first)

    second = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="off"
    )
    await live.loaded(env, second)
    b_keys = Keyspace(B_PREFIX, B_EDGE)
    me = behind[appkeys.CACHE]
    assert me.get(env).version == first

    async def published(keyspace: Keyspace, version: int) -> bool:
        raw = await central_redis.hgetall(keyspace.proxies)
        return any(orjson.loads(v)["versions"].get(env) == version for v in raw.values())

    central_redis = aioredis.from_url(redis_url)
    try:
        await eventually(lambda: published(b_keys, first), what="edge B's proxy presence")
        await eventually(lambda: published(Keyspace("t:", "edge-1"), second), what="edge 1's")
        report, text = await status(crivline_cmd, database_url, redis_url, B_PREFIX, B_EDGE)
        (row,) = report["environments"]
        assert row["name"] == "acme/shop/prod"
        assert (row["postgres"], row["redis"], row["redisBehind"]) == (second, first, 1)
        assert list(row["proxies"].values()) == [first]
        assert list(row["proxiesBehind"].values()) == [1]
        assert report["behind"] == 1
        assert report["syncd"]["heartbeat"] is True
        assert f"{first} (-1)" in text
        assert "1 environment(s), 1 behind" in text
        report, _ = await status(crivline_cmd, database_url, redis_url, "t:", "edge-1")
        assert report["behind"] == 0
        assert [r["redis"] for r in report["environments"]] == [second]

        # Refused requests change nothing.
        code, body, kind = await resync(lagging_syncd, {})
        assert (code, kind) == (401, "application/problem+json")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, body, kind = await resync(lagging_syncd, b"[1", **auth)
        assert (code, kind) == (400, "application/problem+json")
        code, body, _ = await resync(lagging_syncd, {"environment": 7, "extra": 1}, **auth)
        assert code == 400
        assert [e["path"] for e in body["errors"]] == ["extra", "environment"]
        code, body, _ = await resync(lagging_syncd, {"environment": "acme/shop/none"}, **auth)
        assert code == 404
        assert "acme/shop/none" in body["detail"]
        assert int(await central_redis.hget(b_keys.environment(env), "version")) == first

        code, body, _ = await resync(lagging_syncd, {"environment": "acme/shop/prod"}, **auth)
        assert code == 200, body
        assert body["applied"] == 1
        assert body["environments"] == [
            {"environment": env, "name": "acme/shop/prod", "postgres": second,
             "redis": second, "outcome": "applied"}
        ]  # fmt: skip
        # Answered when done: Redis holds it already; the proxy follows by pub/sub.
        assert int(await central_redis.hget(b_keys.environment(env), "version")) == second
        await behind.loaded(env, second)
        await eventually(lambda: published(b_keys, second), what="edge B's proxy at the version")
        report, text = await status(crivline_cmd, database_url, redis_url, B_PREFIX, B_EDGE)
        assert report["behind"] == 0
        assert "1 environment(s), 0 behind" in text

        # All of them, with nothing to do: every one answered as current.
        code, body, _ = await resync(lagging_syncd, None, **auth)
        assert code == 200
        assert [(e["outcome"], e["redis"]) for e in body["environments"]] == [("current", second)]
    finally:
        await central_redis.aclose()


async def test_resync_is_off_without_an_operator_token(database_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2, init=set_json_codecs)
    client = aioredis.from_url(redis_url)
    daemon = Daemon(
        SyncdConfig(keyspace=Keyspace("c:", "edge-c"), port=0, listen=False),
        primary=pool,
        redis=client,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.port is not None, what="syncd listening")
        code, body, kind = await resync(daemon, {}, Authorization="Bearer anything")
        assert (code, kind) == (404, "application/problem+json")
        assert "CRIVLINE_OPERATOR_TOKEN" in body["detail"]
    finally:
        await daemon.close()
        await task
        await pool.close()
        await client.aclose()
