"""Usage counts land in the central ``usage`` table exactly once when a real ``crivline
syncd`` process is SIGKILLed in the middle of a flush and started again.

syncd reaches control through a small front in this test that can hold a report at
either side of control: held *before* control sees it (the batch is staged in Redis,
control has nothing), or held *after* control added it (control has it, syncd never
heard back and has not dropped the batch). The process is SIGKILLed while a report is
held, restarted, and the totals must come out exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from fault_cluster import Part
from support.control_testkit import control_settings
from support.waiting import eventually

from control.app import create_app
from crivline.embedded import free_port
from crivline.keyspace import Keyspace
from crivline.seed import create_tenant, issue_edge_credential
from crivline.settings import Settings
from crivline.usage import count_field

EDGE = "edge-kill"


class Front:
    """Between syncd and control: each report is passed, or held before or after control
    handles it (``plan`` says which, report by report; ``pass`` once it runs out)."""

    def __init__(self, control_url: str) -> None:
        self.control_url = control_url
        self.plan: list[str] = []
        self.held = asyncio.Event()
        self.answers: list[dict[str, object]] = []
        self._never = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        step = self.plan.pop(0) if self.plan else "pass"
        if step == "before":
            self.held.set()
            await self._never.wait()  # until syncd dies and the handler is cancelled
        headers = {k: v for k, v in request.headers.items() if k.lower() in
                   ("authorization", "content-type")}  # fmt: skip
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.control_url + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            status, raw = answer.status, await answer.read()
        if answer.status == 200 and request.path == "/edge/v1/usage":
            self.answers.append(orjson.loads(raw))
        if step == "after":
            self.held.set()
            await self._never.wait()
        return web.Response(status=status, body=raw, content_type="application/json")


@pytest.fixture
async def front(database_url: str) -> AsyncIterator[tuple[Front, str]]:
    control = TestServer(create_app(control_settings(database_url)))
    await control.start_server()
    front = Front(str(control.make_url("")).rstrip("/"))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield front, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await control.close()


async def _central(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT kind, sum(count)::int AS n FROM usage GROUP BY kind")
    return {r["kind"]: r["n"] for r in rows}


@pytest.mark.timeout(90)
async def test_a_syncd_sigkilled_mid_flush_counts_every_request_once(
    database_url: str,
    redis_url: str,
    db: asyncpg.Connection,
    redis: aioredis.Redis,
    front: tuple[Front, str],
    tmp_path: Path,
) -> None:
    gate, front_url = front
    tenant = await create_tenant(db, "acme", plan="enterprise")
    project = await db.fetchval(
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'web', 'Web') RETURNING id",
        tenant.id,
    )
    env = await db.fetchval(
        """INSERT INTO environments (tenant_id, project_id, key, name)
           VALUES ($1, $2, 'prod', 'Prod') RETURNING id::text""",
        tenant.id,
        project,
    )
    keyspace = Keyspace(Settings.from_env({}).key_prefix, EDGE)
    syncd = Part(
        "syncd",
        "syncd",
        free_port(),
        {
            "CRIVLINE_DATABASE_URL": database_url,
            "CRIVLINE_REDIS_URL": redis_url,
            "CRIVLINE_EDGE_ID": EDGE,
            "CRIVLINE_CONTROL_URL": front_url,
            "CRIVLINE_EDGE_CREDENTIAL": await issue_edge_credential(db, EDGE),
            "CRIVLINE_USAGE_FLUSH_INTERVAL": "0.2",
            "CRIVLINE_RECONCILE_INTERVAL": "0.5",
        },
        tmp_path / "syncd.log",
    )
    day = datetime.now(UTC).date()

    async def count(kind: str, n: int) -> None:  # what the proxies do
        await redis.hincrby(keyspace.usage, count_field(env, day, kind), n)

    try:
        # 1. Killed after control added the batch, before syncd could drop it.
        await count("poll", 10)
        await count("stream", 3)
        gate.plan = ["after"]
        syncd.start()
        await eventually(gate.held.is_set, within=30, what="a report held after control")
        await syncd.kill()
        assert await _central(db) == {"poll": 10, "stream": 3}
        assert await redis.exists(keyspace.usage_batch)  # staged, not acknowledged

        # 2. Restarted: the same batch is resent and recognised; then killed again with
        #    the next batch staged but not yet seen by control.
        await count("ofrep_single", 5)
        gate.held.clear()
        gate.plan = ["pass", "before"]
        syncd.start()
        await eventually(gate.held.is_set, within=30, what="a report held before control")
        await syncd.kill()
        assert gate.answers[-1].get("duplicate") is True, gate.answers
        assert await _central(db) == {"poll": 10, "stream": 3}
        assert await redis.exists(keyspace.usage_batch)

        # 3. Restarted for good: every count lands, once.
        await count("ofrep_bulk", 2)
        syncd.start()
        expected = {"poll": 10, "stream": 3, "ofrep_single": 5, "ofrep_bulk": 2}
        await eventually(
            lambda: _settled(db, redis, keyspace, expected), within=30, what="every count, once"
        )
        # And it stays so over further flushes.
        reports = len(gate.answers)
        await eventually(lambda: len(gate.answers) > reports + 1, within=10, what="more flushes")
        assert await _central(db) == expected
    finally:
        await syncd.kill()


async def _settled(
    db: asyncpg.Connection, redis: aioredis.Redis, keyspace: Keyspace, expected: dict[str, int]
) -> bool:
    if await redis.exists(keyspace.usage, keyspace.usage_batch):
        return False
    return await _central(db) == expected
