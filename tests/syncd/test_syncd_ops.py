"""Operating syncd: health, readiness and metrics over HTTP; Postgres going away; the
``crivline syncd`` command itself, started and stopped like a service manager does."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from support.probes import assert_probe
from syncd_testkit import StartSyncd, add_flag, central, edge, make_project, set_default, wait_for

from crivline.edge_store import EdgeStore
from crivline.embedded import PostgresServer, free_port
from crivline.errors import DatabaseUnavailable
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from syncd.main import serve


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get(http: aiohttp.ClientSession, port: int, path: str) -> tuple[int, bytes]:
    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.read()


async def test_health_readiness_and_metrics(
    db: asyncpg.Connection, start_syncd: StartSyncd, http: aiohttp.ClientSession
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    syncd = await start_syncd()
    port = syncd.daemon.port
    assert port
    status, body = await get(http, port, "/healthz")
    assert status == 200
    health = orjson.loads(body)
    assert_probe(health, status, endpoint="healthz")
    assert health["status"] == "ok"
    assert health["deadTasks"] == []
    status, body = await get(http, port, "/readyz")
    ready = orjson.loads(body)
    assert status == 200
    assert_probe(ready, status, endpoint="readyz")
    assert ready["status"] == "ready"
    assert ready["fullSync"] is True
    assert ready["epoch"] == syncd.daemon.reconciler.epoch
    assert ready["listening"] is True

    version = await set_default(db, project, "production", "checkout", "on")
    env = project.environments["production"]
    await wait_for(lambda: _version_is(syncd.store, env, version), 5, "the change")
    status, body = await get(http, port, "/metrics")
    assert status == 200
    text = body.decode()
    for name in (
        "process_resident_memory_bytes",
        "python_info",
        "crivline_syncd_environments 2.0",
        "crivline_syncd_versions_applied_total",
        "crivline_syncd_rebuild_duration_seconds_bucket",
        "crivline_syncd_notification_lag_seconds_bucket",
        "crivline_syncd_commit_lag_seconds_bucket",
        'crivline_syncd_stage_seconds_count{stage="snapshot_read"}',
        'crivline_syncd_stage_seconds_count{stage="redis_write"}',
        'crivline_syncd_stage_seconds_count{stage="wakeup_to_written"}',
        'crivline_syncd_stage_seconds_count{stage="commit_to_wakeup"}',
        "crivline_syncd_reconnects_total",
        "crivline_syncd_last_reconciliation_age_seconds",
        'crivline_syncd_full_syncs_total{reason="startup"} 1.0',
    ):
        assert name in text, name
    assert syncd.sample("crivline_syncd_notification_lag_seconds_count") >= 1
    heartbeat = await syncd.redis.get(Keyspace("crivline:", "edge-1").heartbeat)
    assert heartbeat is not None
    assert orjson.loads(heartbeat)["epoch"] == syncd.daemon.reconciler.epoch
    assert 0 < await syncd.redis.pttl(Keyspace("crivline:", "edge-1").heartbeat) <= 15000


async def _version_is(store: EdgeStore, env: str, version: int) -> bool:
    return await store.version(env) == version


async def test_postgres_down_leaves_redis_untouched_and_syncd_unready_then_catches_up(
    db: asyncpg.Connection,
    database_url: str,
    start_syncd: StartSyncd,
    postgres: PostgresServer,
    redis: aioredis.Redis,
    http: aiohttp.ClientSession,
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    syncd = await start_syncd()
    before = {env: await edge(syncd.store, env) for env in project.environments.values()}
    state = await syncd.store.sync_state()
    await asyncio.to_thread(postgres.stop)
    try:
        stale_after = syncd.daemon.config.stale_after
        await wait_for(
            lambda: not syncd.daemon.readiness()["ready"], stale_after + 3, "readiness to drop"
        )
        status, body = await get(http, syncd.daemon.port or 0, "/readyz")
        assert status == 503
        answer = orjson.loads(body)
        assert_probe(answer, status, endpoint="readyz")
        assert answer["status"] == "not ready"
        assert answer["listening"] is False
        assert len(answer["reasons"]) == 1, answer  # it says why
        assert "no reconciliation with Postgres and Redis has succeeded" in answer["reasons"][0]
        status, _ = await get(http, syncd.daemon.port or 0, "/healthz")
        assert status == 200  # alive, just not fresh
        # Redis keeps serving the last state, untouched: same versions, same epoch.
        for env, view in before.items():
            assert await edge(syncd.store, env) == view
        assert (await syncd.store.sync_state()).epoch == state.epoch
        assert syncd.sample("crivline_syncd_reconciliations_total", result="error") >= 1
    finally:
        await asyncio.to_thread(postgres.start)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "SELECT crivline_bump_environment($1)", project.environments["qa"]
        ) if "qa" in project.environments else None
        env = project.environments["production"]
        version = await conn.fetchval("SELECT crivline_bump_environment($1)", env)
    finally:
        await conn.close()
    await wait_for(lambda: _version_is(syncd.store, env, version), 10, "catching up")
    await wait_for(lambda: syncd.daemon.readiness()["ready"], 10, "readiness again")
    await wait_for(lambda: syncd.daemon.readiness()["listening"], 10, "listening again")
    assert syncd.sample("crivline_syncd_reconnects_total", target="postgres_listen") >= 1


async def test_the_syncd_command_serves_and_stops_cleanly_on_sigterm(
    db: asyncpg.Connection, database_url: str, redis_url: str, http: aiohttp.ClientSession
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    port = free_port()
    # Postgres trusts local connections, so a password in the URL is accepted and
    # ignored: it must still never appear in a log line.
    scheme, rest = database_url.split("://", 1)
    user, host = rest.split("@", 1)
    secret_url = f"{scheme}://{user}:hunter2-secret@{host}"
    env = {
        **os.environ,
        "CRIVLINE_DATABASE_URL": secret_url,
        "CRIVLINE_REDIS_URL": redis_url,
        "CRIVLINE_SYNCD_PORT": str(port),
        "CRIVLINE_EDGE_ID": "cli-edge",
        "CRIVLINE_RECONCILE_INTERVAL": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crivline",
        "syncd",
        "--project",
        "app",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output = asyncio.ensure_future(proc.communicate())
    try:

        async def ready() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"syncd exited early with {proc.returncode}")
            try:
                status, _ = await get(http, port, "/readyz")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_for(ready, 30, "crivline syncd to be ready")
        store = EdgeStore(aioredis.from_url(redis_url), Keyspace("crivline:", "cli-edge"))
        try:
            for env_id in project.environments.values():
                assert await edge(store, env_id) == await central(db, env_id)
            version = await set_default(db, project, "production", "checkout", "on")
            production = project.environments["production"]
            await wait_for(lambda: _version_is(store, production, version), 5, "a change")
        finally:
            await store.redis.aclose()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
        stopping = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out, err = await output
    assert code == 0, err.decode()[-2000:]
    assert stopping < 10
    lines = err.decode().splitlines()
    events = [orjson.loads(line)["event"] for line in lines]  # every line is one JSON event
    assert "syncd started" in events
    assert "full sync complete" in events
    assert events[-1] == "syncd stopped"
    assert b"hunter2-secret" not in err + out


async def test_start_up_gives_up_on_an_unreachable_database_after_its_deadline(
    redis_url: str,
) -> None:
    port = free_port()  # nobody listens there
    settings = Settings.from_env(
        {},
        database_url=f"postgresql://postgres:hunter2-secret@127.0.0.1:{port}/crivline",
        redis_url=redis_url,
        syncd_port=free_port(),
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as raised:
        await serve(settings, connect_deadline=0.5)
    assert time.monotonic() - started < 5
    assert "hunter2-secret" not in str(raised.value)
    assert f"127.0.0.1:{port}" in str(raised.value)


async def test_syncd_started_while_postgres_is_down_waits_for_it_then_syncs(
    db: asyncpg.Connection,
    database_url: str,
    redis_url: str,
    postgres: PostgresServer,
    http: aiohttp.ClientSession,
) -> None:
    project = await make_project(db)
    port = free_port()
    await db.close()
    await asyncio.to_thread(postgres.stop)
    env = {
        **os.environ,
        "CRIVLINE_DATABASE_URL": database_url,
        "CRIVLINE_REDIS_URL": redis_url,
        "CRIVLINE_SYNCD_PORT": str(port),
        "CRIVLINE_EDGE_ID": "late-edge",
        "CRIVLINE_RECONCILE_INTERVAL": "0.5",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crivline", "syncd",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        # It says it is retrying (one JSON line), and keeps at it.
        async with asyncio.timeout(10):
            while True:
                line = await proc.stderr.readline()
                assert line, "syncd exited instead of retrying"
                if orjson.loads(line)["event"] == "connect failed, retrying":
                    break
        await asyncio.to_thread(postgres.start)

        async def ready() -> bool:
            try:
                status, _ = await get(http, port, "/readyz")
            except aiohttp.ClientError:
                return False
            return status == 200

        await wait_for(ready, 30, "syncd to be ready once Postgres is up")
        store = EdgeStore(aioredis.from_url(redis_url), Keyspace("crivline:", "late-edge"))
        try:
            assert await store.served() == set(project.environments.values())
            fields = await store.redis.hkeys(store.keyspace.sync_state)
            assert not [f for f in fields if f.startswith(b"pending:")]
        finally:
            await store.redis.aclose()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigterm_while_start_up_still_retries_exits_cleanly(redis_url: str) -> None:
    env = {
        **os.environ,
        "CRIVLINE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/crivline",
        "CRIVLINE_REDIS_URL": redis_url,
        "CRIVLINE_SYNCD_PORT": str(free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crivline", "syncd",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(10):
            while True:
                line = await proc.stderr.readline()
                assert line, "syncd exited instead of retrying"
                if orjson.loads(line)["event"] == "connect failed, retrying":
                    break
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        rest = await proc.stderr.read()
        assert b"syncd stopped before it could connect" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_applied_environments_are_logged_by_name(
    db: asyncpg.Connection, start_syncd: StartSyncd, caplog: pytest.LogCaptureFixture
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    with caplog.at_level(logging.INFO, logger="syncd.replicate"):
        syncd = await start_syncd()
        env = project.environments["production"]
        version = await set_default(db, project, "production", "checkout", "on")
        await wait_for(lambda: _version_is(syncd.store, env, version), 5, "the change")
    applied = [r for r in caplog.records if r.getMessage() == "environment applied"]
    names = {r.fields["environment"]: r.fields["name"] for r in applied}  # type: ignore[attr-defined]
    assert names[env] == "acme/app/production"
