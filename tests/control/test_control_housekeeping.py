"""control's housekeeping pass: retention of the redelivery ledgers, and plans that end
with their subscription's period reaching the edges without a write."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from support.control_testkit import Control, control_settings, start_control
from support.roles import part_url
from support.waiting import eventually

from control.housekeeping import housekeep
from crivline.snapshot import set_json_codecs


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """control's own login, as the app runs it: row-level security applies."""
    created = await asyncpg.create_pool(
        part_url(database_url, "control"), min_size=1, max_size=2, init=set_json_codecs
    )
    try:
        yield created
    finally:
        await created.close()


async def _versions(db: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    rows = await db.fetch("SELECT key, version FROM environments WHERE tenant_id = $1", tenant_id)
    return {r["key"]: r["version"] for r in rows}


async def _unpaid(db: asyncpg.Connection, tenant_id: str, period_end: datetime) -> None:
    await db.execute(
        """INSERT INTO subscriptions (tenant_id, plan_tier, status, current_period_end,
                                      updated_at)
           VALUES ($1, 'pro', 'unpaid', $2, now())""",
        tenant_id,
        period_end,
    )


async def test_ledger_rows_past_the_retention_go_and_recent_ones_stay(
    control: Control, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    old = datetime.now(UTC) - timedelta(days=31)
    await db.execute(
        "INSERT INTO usage_batches (edge_id, sequence, received_at)"
        " VALUES ('edge-a', 1, $1), ('edge-a', 2, now())",
        old,
    )
    await db.execute(
        """INSERT INTO stripe_events (id, type, created, tenant_id, outcome, received_at)
           VALUES ('evt_old', 'customer.subscription.updated', $2, $1, 'applied', $2),
                  ('evt_new', 'customer.subscription.updated', now(), $1, 'applied', now())""",
        control.tenant_id,
        old,
    )

    done = await housekeep(pool, retention_days=30)

    assert (done.usage_batches, done.stripe_events) == (1, 1)
    assert await db.fetchval("SELECT array_agg(sequence) FROM usage_batches") == [2]
    assert await db.fetchval("SELECT array_agg(id) FROM stripe_events") == ["evt_new"]
    again = await housekeep(pool, retention_days=30)
    assert (again.usage_batches, again.stripe_events) == (0, 0)


async def test_an_unpaid_period_that_ends_bumps_the_tenant_once_audited(
    control: Control, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await control.project()
    await _unpaid(db, control.tenant_id, datetime.now(UTC) + timedelta(hours=1))
    before = await _versions(db, control.tenant_id)
    assert (await housekeep(pool, retention_days=30)).period_ends == []  # still paid for
    assert await _versions(db, control.tenant_id) == before
    assert (await control.get("/plan")).body["tier"] == "pro"

    await db.execute(  # the period ended after the subscription's last change
        "UPDATE subscriptions SET current_period_end = now() - interval '1 second',"
        " updated_at = now() - interval '1 hour' WHERE tenant_id = $1",
        control.tenant_id,
    )
    flags_before = await db.fetch(
        "SELECT id, flags_version FROM environments WHERE tenant_id = $1 ORDER BY id",
        control.tenant_id,
    )
    done = await housekeep(pool, retention_days=30)

    assert done.period_ends == [control.tenant_id]
    # The plan is the edge's to enforce: the flag sets SDKs hold keep their version.
    assert flags_before == await db.fetch(
        "SELECT id, flags_version FROM environments WHERE tenant_id = $1 ORDER BY id",
        control.tenant_id,
    )
    after = await _versions(db, control.tenant_id)
    assert {env: after[env] - before[env] for env in after} == {"dev": 1, "prod": 1}
    assert sorted(c.environment_id for c in done.changes) == sorted(
        await db.fetchval(
            "SELECT array_agg(id::text) FROM environments WHERE tenant_id = $1",
            control.tenant_id,
        )
    )
    entry = await db.fetchrow("SELECT actor, before, after FROM audit_log WHERE action = $1",
                              "plan.period_end")  # fmt: skip
    assert entry is not None
    assert (entry["before"]["tier"], entry["after"]["tier"]) == ("pro", "free")
    assert (await control.get("/plan")).body["tier"] == "free"
    # Once: the next pass finds nothing to do.
    assert (await housekeep(pool, retention_days=30)).period_ends == []
    assert await _versions(db, control.tenant_id) == after


async def test_controls_periodic_pass_runs_it(database_url: str, db: asyncpg.Connection) -> None:
    running = await start_control(
        control_settings(database_url, housekeeping_interval=0.2), db, tenant="globex"
    )
    try:
        await running.project()
        before = await _versions(db, running.tenant_id)
        await _unpaid(db, running.tenant_id, datetime.now(UTC) - timedelta(seconds=1))
        await db.execute(
            "UPDATE subscriptions SET updated_at = now() - interval '1 hour' WHERE tenant_id = $1",
            running.tenant_id,
        )

        async def bumped() -> bool:
            now = await _versions(db, running.tenant_id)
            return all(now[env] > before[env] for env in now)

        await eventually(bumped, within=10, what="the period's end to bump the environments")
    finally:
        await running.client.close()
