"""Key handling: only hashes at rest, floods of unknown keys kept away from Redis, and a
revoked key refused everywhere — every route, every open stream, every ticket — within
a second of the revocation's commit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from support.edgekit import SSEClient
from support.waiting import eventually
from world import TENANTS, World

from crivline import tokens
from proxy import appkeys
from proxy.hub import SDK

OpenStream = Callable[..., Awaitable[SSEClient]]


def every_secret(world: World) -> list[str]:
    return [
        secret
        for t in TENANTS
        for secret in (world.tenants[t].token, *world.tenants[t].keys.values())
    ]


async def redis_dump(redis: aioredis.Redis) -> bytes:
    """Every key and every value of the edge Redis, as one blob."""
    out = bytearray()
    async for name in redis.scan_iter(count=1000):
        kind = (await redis.type(name)).decode()
        out += name + b"\n"
        if kind == "string":
            out += await redis.get(name) or b""
        elif kind == "hash":
            for k, v in (await redis.hgetall(name)).items():
                out += k + b"=" + v + b"\n"
        elif kind == "set":
            out += b"\n".join(await redis.smembers(name))
        elif kind == "list":
            out += b"\n".join(await redis.lrange(name, 0, -1))
        elif kind == "zset":
            out += b"\n".join(await redis.zrange(name, 0, -1))
        elif kind == "stream":
            for _id, fields in await redis.xrange(name):
                out += b"".join(k + v for k, v in fields.items())
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {name!r}")
        out += b"\n"
    return bytes(out)


async def test_keys_and_tokens_are_stored_only_as_hashes(
    world: World, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    db = world.central.db
    secrets = every_secret(world)
    # Use every key once, so whatever caches them has seen them.
    for t in TENANTS:
        for (_env, kind), secret in world.tenants[t].keys.items():
            path = "/sdk/v1/flags" if kind == "server" else "/ofrep/v1/evaluate/flags"
            method = "GET" if kind == "server" else "POST"
            async with world.proxy.session.request(
                method, world.proxy.url + path, headers={"Authorization": f"Bearer {secret}"}
            ) as response:
                assert response.status == 200
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert len(tables) >= 8
    for row in tables:
        table = row["table_name"]
        text = await db.fetchval(f"SELECT coalesce(json_agg(t)::text, '') FROM \"{table}\" t")
        for secret in secrets:
            assert secret not in text, f"a raw secret in table {table}"
            assert secret[len("crv_xxx_") :] not in text, f"a secret's body in table {table}"
    # What is stored is the SHA-256 and the 8-character display prefix.
    for t in TENANTS:
        for (env, kind), secret in world.tenants[t].keys.items():
            row = await db.fetchrow(
                "SELECT key_hash, display_prefix FROM api_keys WHERE id = $1",
                world.tenants[t].key_ids[(env, kind)],
            )
            assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
            assert row["display_prefix"] == tokens.display_prefix(secret)
            assert len(row["display_prefix"]) == 8
    edge = await redis_dump(redis)
    assert len(edge) > 1000
    for secret in secrets:
        assert secret.encode() not in edge
        assert secret[len("crv_xxx_") :].encode() not in edge
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in secrets:
        assert secret not in logged


async def command_calls(redis: aioredis.Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


async def test_a_flood_of_unknown_keys_stays_away_from_redis(
    world: World, redis: aioredis.Redis
) -> None:
    """4000 requests, each with a fresh well-formed key nobody issued: every one refused
    with 401 from memory; Redis sees at most the proxy's lookup budget (50 a second),
    not one command per request."""
    budget = world.proxy.app[appkeys.OPTIONS].key_miss_budget
    flood = 4000

    async def idle_calls(seconds: float) -> dict[str, int]:
        """What the proxy and syncd send anyway (health checks, counters, reconciling)."""
        before = await command_calls(redis)
        await asyncio.sleep(seconds)
        after = await command_calls(redis)
        return {k: v - before.get(k, 0) for k, v in after.items()}

    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            key = tokens.generate(tokens.SecretKind.CLIENT)
            async with session.post(
                world.proxy.url + "/ofrep/v1/evaluate/flags",
                headers={"Authorization": f"Bearer {key}"},
                data=b"{}",
            ) as response:
                statuses[response.status] = statuses.get(response.status, 0) + 1

        before = await command_calls(redis)
        started = time.monotonic()
        for batch in range(0, flood, 200):
            await asyncio.gather(*(one() for _ in range(min(200, flood - batch))))
        elapsed = time.monotonic() - started
        after = await command_calls(redis)
    assert statuses == {401: flood}, statuses
    lookups = after.get("hexists", 0) - before.get("hexists", 0)  # one per key lookup
    total = sum(after.values()) - sum(before.values())
    background = await idle_calls(elapsed)
    allowed = budget * (elapsed + 1) + 10  # the bucket's burst, its refill, some slack
    assert lookups - background.get("hexists", 0) <= allowed, (lookups, background, elapsed)
    # A lookup is a few commands in one round trip; the flood is thousands of requests.
    assert total - sum(background.values()) <= 5 * allowed, (total, background, elapsed)
    # The budget is per second, so the bound above grows with the flood's duration (tens
    # of seconds on a loaded machine); whatever the pace, most requests never reached
    # Redis at all.
    assert lookups - background.get("hexists", 0) < flood / 2, (lookups, flood, elapsed)


async def test_a_revoked_key_is_refused_everywhere_within_a_second(
    world: World, open_stream: OpenStream
) -> None:
    proxy, tenant = world.proxy, world.acme
    server, client = tenant.key("dev", "server"), tenant.key("dev", "client")

    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def bulk_ticket_url(key: str) -> str:
        async with proxy.session.post(
            proxy.url + "/ofrep/v1/evaluate/flags", headers=auth(key), json={}
        ) as response:
            assert response.status == 200
            url: str = (await response.json())["eventStreams"][0]["url"]
            return url.removeprefix(proxy.url)

    ticket_path = await bulk_ticket_url(server)
    streams = [
        await open_stream(proxy, "/sdk/v1/stream", headers=auth(server)),
        await open_stream(proxy, "/ofrep/v1/events", headers=auth(server)),
        await open_stream(proxy, ticket_path),
    ]
    for stream in streams:
        assert stream.response.status == 200
        await stream.raw_until(1)
    other = await open_stream(proxy, "/sdk/v1/stream", headers=auth(tenant.key("prod")))
    client_ticket = await bulk_ticket_url(client)

    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/sdk/v1/flags", {"headers": auth(server)}),
        ("GET", "/sdk/v1/stream", {"headers": auth(server)}),
        ("POST", "/ofrep/v1/evaluate/flags/checkout", {"headers": auth(server), "json": {}}),
        ("POST", "/ofrep/v1/evaluate/flags", {"headers": auth(server), "json": {}}),
        ("POST", "/ofrep/v1/evaluate/flags", {"headers": {"X-API-Key": server}, "json": {}}),
        ("GET", "/ofrep/v1/events", {"headers": auth(server)}),
        ("GET", ticket_path, {}),
    ]

    async def refused_everywhere() -> bool:
        for method, path, kwargs in requests:
            async with proxy.session.request(method, proxy.url + path, **kwargs) as response:
                if response.status != 401:
                    return False
                assert (await response.json())["errorCode"] == "UNAUTHORIZED"
        return True

    assert not await refused_everywhere()
    status, _, _ = await world.api(
        tenant,
        "DELETE",
        f"/projects/shop/environments/dev/keys/{tenant.key_ids[('dev', 'server')]}",
    )
    revoked_at = time.monotonic()
    assert status == 200
    await eventually(refused_everywhere, within=1.0, what="the revoked key refused everywhere")
    for stream in streams:
        tail = await stream.closed(within=max(0.05, 1.0 - (time.monotonic() - revoked_at)))
        assert stream.eof, tail[-200:]
    elapsed = time.monotonic() - revoked_at
    assert elapsed <= 1.0, f"took {elapsed:.2f}s"
    # Nothing else was touched: the environment's other key, and another environment.
    async with proxy.session.get(proxy.url + client_ticket) as response:
        assert response.status == 200
    async with proxy.session.post(
        proxy.url + "/ofrep/v1/evaluate/flags", headers=auth(client), json={}
    ) as response:
        assert response.status == 200
    assert proxy.app[appkeys.HUB].count(tenant.env_ids["prod"], SDK) == 1
    assert not other.eof
