"""syncd following Postgres: writes reach Redis, announced; bursts coalesce; keys revoke."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import orjson
import redis.asyncio as aioredis
from syncd_testkit import (
    INTERVAL,
    Announcements,
    StartSyncd,
    add_flag,
    add_key,
    central,
    edge,
    make_project,
    revoke_key,
    set_default,
    wait_for,
)

from crivline import tokens


async def test_full_sync_on_start_copies_every_environment(
    db: asyncpg.Connection, start_syncd: StartSyncd
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    await add_key(db, project, "production")
    syncd = await start_syncd()
    for env in project.environments.values():
        assert await edge(syncd.store, env) == await central(db, env)
    state = await syncd.store.sync_state()
    assert state.epoch == syncd.daemon.reconciler.epoch
    assert state.full_sync_at is not None
    assert await syncd.store.served() == set(project.environments.values())
    assert syncd.sample("crivline_syncd_full_syncs_total", reason="startup") == 1


async def test_a_write_appears_with_its_version_and_is_announced(
    db: asyncpg.Connection, start_syncd: StartSyncd, announcements: Announcements
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    syncd = await start_syncd(interval=30)  # notifications alone deliver it
    env = project.environments["production"]
    committed = time.time()
    version = await set_default(db, project, "production", "checkout", "on")

    async def arrived() -> bool:
        view = await edge(syncd.store, env)
        return view is not None and view.version == version

    await wait_for(arrived, 5, "the change in redis")
    assert await edge(syncd.store, env) == await central(db, env)
    stored = await syncd.store.read_environment(env)
    assert stored is not None
    flag = stored.flag_set()["flags"]["checkout"]
    assert flag["defaultVariant"] == "on"
    assert abs(stored.committed_at - committed) < 5
    await wait_for(lambda: version in announcements.versions(env), 5, "the announcement")
    message = announcements.of(env)[-1]
    assert message == {"e": env, "v": version, "at": stored.committed_at, "keys": False}
    # The delta of that version holds just the changed flag.
    last = (await syncd.store.delta_log(env))[-1]
    assert (last.version, last.delta["flags"], last.delta["removed"]) == (
        version,
        {"checkout": flag},
        [],
    )
    assert syncd.sample("crivline_syncd_notification_lag_seconds_count") >= 1


async def test_without_notifications_a_change_arrives_within_a_reconciliation(
    db: asyncpg.Connection, start_syncd: StartSyncd
) -> None:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    syncd = await start_syncd(listen=False)
    env = project.environments["production"]
    before = syncd.sample("crivline_syncd_reconcile_resyncs_total")
    version = await set_default(db, project, "production", "checkout", "on")
    committed = time.monotonic()

    async def arrived() -> bool:
        return await syncd.store.version(env) == version

    # One interval until the next pass, plus the rebuild and a loaded CI machine's slack.
    await wait_for(arrived, INTERVAL + 1.5, "reconciliation to bring the change")
    elapsed = time.monotonic() - committed
    assert await edge(syncd.store, env) == await central(db, env)
    assert syncd.sample("crivline_syncd_reconcile_resyncs_total") > before
    assert syncd.sample("crivline_syncd_wakeups_total", source="postgres", fate="queued") == 0
    print(f"arrived {elapsed:.3f}s after commit with reconcile interval {INTERVAL}s")


async def test_a_burst_to_one_environment_coalesces(
    db: asyncpg.Connection,
    database_url: str,
    start_syncd: StartSyncd,
    announcements: Announcements,
) -> None:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    syncd = await start_syncd(interval=30)  # only notifications can deliver here
    env = project.environments["production"]
    rebuilds_before = sum(
        syncd.sample("crivline_syncd_rebuilds_total", outcome=o)
        for o in ("applied", "current", "removed", "out_of_scope", "error")
    )
    # Writers as the owner: syncd's own role may not write (migration 0005).
    writers = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        started = time.monotonic()

        async def writes(conn: asyncpg.Connection, count: int) -> None:
            for _ in range(count):
                await conn.execute("SELECT crivline_bump_environment($1)", env)

        await asyncio.gather(*(writes(conn, 25) for conn in writers))
        burst = time.monotonic() - started
    finally:
        for conn in writers:
            await conn.close()
    final = await db.fetchval("SELECT version FROM environments WHERE id = $1", env)

    async def arrived() -> bool:
        return await syncd.store.version(env) == final

    await wait_for(arrived, 5, "the last version")
    rebuilds = (
        sum(
            syncd.sample("crivline_syncd_rebuilds_total", outcome=o)
            for o in ("applied", "current", "removed", "out_of_scope", "error")
        )
        - rebuilds_before
    )
    print(f"100 commits in {burst * 1000:.0f} ms cost {rebuilds:.0f} rebuilds")
    assert 1 <= rebuilds <= 20
    # Every announced version is newer than the one before.
    versions = announcements.versions(env)
    assert versions == sorted(set(versions))
    assert versions[-1] == final


async def test_a_revoked_key_leaves_redis_within_a_second(
    db: asyncpg.Connection, start_syncd: StartSyncd, announcements: Announcements
) -> None:
    project = await make_project(db, environments=("production",))
    secret = await add_key(db, project, "production")
    other = await add_key(db, project, "production", "client")
    syncd = await start_syncd()
    env = project.environments["production"]
    key_hash = tokens.hex_digest(secret)
    assert await syncd.store.read_api_key(key_hash) is not None
    version = await revoke_key(db, secret)
    committed = time.monotonic()

    async def gone() -> bool:
        return await syncd.store.read_api_key(key_hash) is None

    await wait_for(gone, 1.0, "the revoked key to leave redis")
    print(f"revocation reached redis {time.monotonic() - committed:.3f}s after commit")
    assert await syncd.store.environment_key_hashes(env) == {tokens.hex_digest(other)}
    await wait_for(lambda: version in announcements.versions(env), 2, "the announcement")
    assert announcements.of(env)[-1]["keys"] is True


async def test_bus_messages_wake_syncd_and_duplicates_cost_nothing(
    db: asyncpg.Connection, start_syncd: StartSyncd, redis_url: str
) -> None:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    bus = aioredis.from_url(redis_url)  # the suite's Valkey doubles as the central bus
    try:
        syncd = await start_syncd(listen=False, interval=30, bus=bus)
        await wait_for(lambda: syncd.daemon.readiness()["bus"], 5, "the bus subscription")
        env = project.environments["production"]
        async with db.transaction():
            version = await db.fetchval("SELECT crivline_bump_environment($1)", env)
            row = await db.fetchrow(
                "SELECT tenant_id::text, project_id::text FROM environments WHERE id = $1", env
            )
        payload = orjson.dumps(
            {"e": env, "v": version, "t": row[0], "p": row[1], "at": time.time()}
        )
        for _ in range(3):  # a redelivered message is a duplicate
            await bus.publish(syncd.daemon.config.keyspace.bus, payload)
        await bus.publish(syncd.daemon.config.keyspace.bus, b"not json")

        async def arrived() -> bool:
            return await syncd.store.version(env) == version

        await wait_for(arrived, 5, "the bus to deliver the change")

        def accounted() -> bool:
            fates = {
                fate: syncd.sample("crivline_syncd_wakeups_total", source="bus", fate=fate)
                for fate in ("queued", "merged", "duplicate", "invalid")
            }
            return fates["queued"] == 1 and fates["duplicate"] == 2 and fates["invalid"] == 1

        await wait_for(accounted, 5, "every bus message accounted for")
        # The Redis write is visible before the daemon counts it: wait for the count,
        # then check the duplicates added none.
        await wait_for(
            lambda: syncd.sample("crivline_syncd_rebuilds_total", outcome="applied") >= 1 + 1,
            5,
            "the rebuild to be counted",
        )
        assert syncd.sample("crivline_syncd_rebuilds_total", outcome="applied") == 1 + 1  # + start
    finally:
        await bus.aclose()
