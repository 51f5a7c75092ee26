"""Snapshot reads from a read replica: used when current, retried when lagging, never
written as current when behind — after ``replica_wait`` the primary answers instead.

The "replica" is a second database whose rows the test copies from the primary by hand,
so the test decides exactly when it lags and when it catches up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from syncd_testkit import StartSyncd, add_flag, central, edge, make_project, set_default, wait_for

from crivline.snapshot import set_json_codecs

TABLES = ("tenants", "projects", "environments", "flags", "flag_environments", "segments",
          "api_keys")  # fmt: skip


@pytest.fixture
async def replica_url(database_url: str, template_database: str) -> AsyncIterator[str]:
    base, _, name = database_url.rpartition("/")
    replica = f"{name}_replica"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{replica}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield f"{base}/{replica}"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{replica}" WITH (FORCE)')
    finally:
        await admin.close()


async def replicate(primary: asyncpg.Connection, replica_url: str) -> None:
    """Make the replica an exact copy of the primary's edge-relevant rows."""
    replica = await asyncpg.connect(replica_url)
    await set_json_codecs(replica)
    try:
        async with replica.transaction():
            for table in reversed(TABLES):
                await replica.execute(f"DELETE FROM {table}")
            for table in TABLES:
                rows = await primary.fetch(f"SELECT * FROM {table}")
                if not rows:
                    continue
                columns = list(rows[0].keys())
                marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
                await replica.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) OVERRIDING SYSTEM VALUE"
                    f" VALUES ({marks})",
                    [tuple(row.values()) for row in rows],
                )
    finally:
        await replica.close()


async def test_a_lagging_replica_is_waited_for_then_bypassed(
    db: asyncpg.Connection, start_syncd: StartSyncd, replica_url: str
) -> None:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    await replicate(db, replica_url)
    syncd = await start_syncd(replica_url=replica_url, replica_wait=1.5)
    env = project.environments["production"]
    assert syncd.sample("crivline_syncd_snapshot_reads_total", source="replica") == 1
    assert syncd.sample("crivline_syncd_snapshot_reads_total", source="primary") == 0

    # The primary moves on; the replica lags until we copy the rows over.
    retries = syncd.sample("crivline_syncd_replica_lag_retries_total")
    version = await set_default(db, project, "production", "checkout", "on")
    await wait_for(
        lambda: syncd.sample("crivline_syncd_replica_lag_retries_total") > retries,
        5,
        "syncd to find the replica behind",
    )
    assert await syncd.store.version(env) < version  # nothing written while it lags
    await replicate(db, replica_url)

    async def arrived() -> bool:
        return await syncd.store.version(env) == version

    await wait_for(arrived, 5, "the change, from the caught-up replica")
    assert await edge(syncd.store, env) == await central(db, env)
    assert syncd.sample("crivline_syncd_snapshot_reads_total", source="replica") >= 2
    assert syncd.sample("crivline_syncd_replica_fallbacks_total") == 0

    # Now the replica stays behind: after replica_wait the primary is read instead, and
    # the replica's older flag set is never written under the newer version.
    newer = await set_default(db, project, "production", "checkout", "off")

    async def arrived_again() -> bool:
        return await syncd.store.version(env) == newer

    await wait_for(arrived_again, 5, "the change, from the primary")
    assert await edge(syncd.store, env) == await central(db, env)
    assert syncd.sample("crivline_syncd_replica_fallbacks_total") == 1
    assert syncd.sample("crivline_syncd_snapshot_reads_total", source="primary") == 1
    log = await syncd.store.delta_log(env)
    assert [entry.version for entry in log] == sorted({entry.version for entry in log})


async def test_a_replica_that_is_down_does_not_stop_syncd(
    db: asyncpg.Connection, start_syncd: StartSyncd, database_url: str
) -> None:
    project = await make_project(db, environments=("production",))
    base, _, _ = database_url.rpartition("/")
    missing = f"{base}/no_such_database"  # every connection to it fails
    syncd = await start_syncd(replica_url=missing)
    env = project.environments["production"]
    assert await edge(syncd.store, env) == await central(db, env)
    assert syncd.sample("crivline_syncd_replica_fallbacks_total") >= 1
