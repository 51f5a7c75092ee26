"""End to end through the control API: a write made over HTTP reaches the edge Redis
with the version control reported, and is announced — by LISTEN/NOTIFY, and by the bus
alone when notifications are off."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.control_testkit import control_settings
from syncd_testkit import Announcements, StartSyncd, central, edge, wait_for

from control.app import create_app
from crivline import tokens
from crivline.seed import create_tenant

API = "/api/v1"


class Api:
    def __init__(self, client: TestClient[web.Request, web.Application], token: str) -> None:
        self.client = client
        self.token = token

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.client.request(method, API + path, json=body, headers=headers) as r:
            assert r.status in (200, 201), (r.status, await r.text())
            return await r.json(content_type=None)


@pytest.fixture
async def control_api(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> AsyncIterator[Api]:
    # The suite's Valkey doubles as the central bus (a channel of its own).
    settings = control_settings(database_url, bus_url=redis_url)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_app(settings), host="127.0.0.1")
    )
    await client.start_server()
    try:
        tenant = await create_tenant(db, "acme")
        api = Api(client, tenant.token)
        await api.call("POST", "/projects", {"key": "shop", "name": "Shop"})
        for env in ("dev", "prod"):
            await api.call("POST", "/projects/shop/environments", {"key": env})
        body = {"key": "checkout", "type": "boolean", "variants": {"on": True, "off": False},
                "defaultVariant": "off"}  # fmt: skip
        await api.call("POST", "/projects/shop/flags", body)
        yield api
    finally:
        await client.close()


async def environment_id(db: asyncpg.Connection, key: str) -> str:
    env: str = await db.fetchval("SELECT id::text FROM environments WHERE key = $1", key)
    return env


@pytest.mark.parametrize("via", ["notify", "bus"])
async def test_a_write_through_the_control_api_reaches_redis_and_is_announced(
    via: str,
    db: asyncpg.Connection,
    redis_url: str,
    control_api: Api,
    start_syncd: StartSyncd,
    announcements: Announcements,
) -> None:
    bus = aioredis.from_url(redis_url) if via == "bus" else None
    try:
        # With the bus alone, reconciliation is too slow to be what delivers the change.
        syncd = await start_syncd(listen=via == "notify", bus=bus, interval=30)
        if bus is not None:
            await wait_for(lambda: syncd.daemon.readiness()["bus"], 5, "the bus subscription")
        prod = await environment_id(db, "prod")

        state = await control_api.call(
            "PUT", "/projects/shop/flags/checkout/environments/prod",
            {"state": "ENABLED", "defaultVariant": "on"},
        )  # fmt: skip
        version = state["environmentVersion"]

        async def arrived(want: int) -> bool:
            return await syncd.store.version(prod) == want

        await wait_for(lambda: arrived(version), 5, "the flag change")
        stored = await syncd.store.read_environment(prod)
        assert stored is not None
        assert stored.flag_set()["flags"]["checkout"]["defaultVariant"] == "on"
        assert await edge(syncd.store, prod) == await central(db, prod)
        await wait_for(lambda: version in announcements.versions(prod), 5, "the announcement")

        created = await control_api.call(
            "POST", "/projects/shop/environments/prod/keys", {"kind": "server"}
        )
        key_hash = tokens.hex_digest(created["key"])
        await wait_for(lambda: arrived(created["environmentVersion"]), 5, "the new key")
        assert await syncd.store.read_api_key(key_hash) is not None

        await control_api.call(
            "DELETE", f"/projects/shop/environments/prod/keys/{created['apiKey']['id']}"
        )

        async def revoked() -> bool:
            return await syncd.store.read_api_key(key_hash) is None

        await wait_for(revoked, 1.0, "the revoked key to leave redis")
        assert announcements.of(prod)[-1]["keys"] is True or await wait_for(
            lambda: announcements.of(prod)[-1]["keys"], 2, "the key announcement"
        )
        source = "postgres" if via == "notify" else "bus"
        woken = sum(
            syncd.sample("crivline_syncd_wakeups_total", source=source, fate=fate)
            for fate in ("queued", "merged")
        )
        assert woken >= 3  # one per write, each merged into a pending one or queued
    finally:
        if bus is not None:
            await bus.aclose()
