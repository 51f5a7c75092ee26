"""control's periodic housekeeping, one pass every ``CRIVLINE_HOUSEKEEPING_INTERVAL``:

- **Retention.** Idempotency keys older than their 24 hours; the ids of usage batches
  (``usage_batches``) and of Stripe events (``stripe_events``) older than
  ``CRIVLINE_LEDGER_RETENTION_DAYS``. Those ids only recognise redeliveries — an edge
  resends a batch until control acknowledges it, Stripe retries an event for three
  days — so a retention well past both keeps every count exact.
- **Plans that change by time alone.** A subscription whose tier lasts until its
  period ends (``unpaid``, see :mod:`crivline.plans`) falls to the free tier when that
  period passes, with no write to announce it. Each pass finds those whose period ended
  since their last change, and in one transaction per tenant records the change (an
  audit row; ``updated_at`` moves, which also orders the plan at the edges) and bumps
  every live environment of the tenant, so the edges apply the new plan like any
  change, without waiting for the tenant's next write.

A pass that fails (Postgres away) is logged and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import cast

import asyncpg

from control.bus import Bus
from control.idempotency import RETENTION_HOURS
from control.store.scope import Change, TenantScope
from control.tx import bind_tenant
from crivline.ioerrors import POSTGRES_ERRORS
from crivline.logs import describe, fields
from crivline.plans import FREE_TIER, PAYING_UNTIL_PERIOD_END

log = logging.getLogger(__name__)

ACTOR = "system:housekeeping"

# Across tenants, through the functions control may do that with (migration 0005): its
# own role sees no row without a tenant set.
_ENDED = "SELECT t::text FROM crivline_ended_periods($1::text[]) AS t"
_LOCK_ENDED = """
SELECT plan_tier, status, current_period_end FROM subscriptions
 WHERE tenant_id = $1 AND status = ANY($2::text[]) AND current_period_end <= now()
   AND updated_at < current_period_end
   FOR NO KEY UPDATE
"""
_LIVE_ENVIRONMENTS = (
    "SELECT id::text FROM environments WHERE tenant_id = $1 AND archived_at IS NULL ORDER BY id"
)


@dataclass(slots=True)
class Pass:
    """What one housekeeping pass did."""

    idempotency_keys: int = 0
    usage_batches: int = 0
    stripe_events: int = 0
    period_ends: list[str] = field(default_factory=list)  # tenant ids
    changes: list[Change] = field(default_factory=list)


async def clean_up(conn: asyncpg.Connection, retention_days: int, done: Pass) -> None:
    done.idempotency_keys = await conn.fetchval(
        "SELECT crivline_purge_idempotency_keys(make_interval(hours => $1))", RETENTION_HOURS
    )
    row = await conn.fetchrow(
        "SELECT * FROM crivline_purge_ledgers(make_interval(days => $1))", retention_days
    )
    assert row is not None
    done.usage_batches, done.stripe_events = row["usage_batches"], row["stripe_events"]


async def end_periods(conn: asyncpg.Connection, done: Pass) -> None:
    statuses = sorted(PAYING_UNTIL_PERIOD_END)
    for row in await conn.fetch(_ENDED, statuses):
        tenant = row[0]
        async with conn.transaction():
            await bind_tenant(conn, tenant)
            # Again under the row lock: a webhook may have changed it since.
            locked = await conn.fetchrow(_LOCK_ENDED, tenant, statuses)
            if locked is None:
                continue
            await conn.execute(
                "UPDATE subscriptions SET updated_at = now() WHERE tenant_id = $1", tenant
            )
            scope = TenantScope(conn, tenant, ACTOR)
            await scope.audit(
                project_id=None,
                action="plan.period_end",
                entity_type="subscription",
                entity_id=None,
                entity_key=FREE_TIER,
                before={"tier": locked["plan_tier"], "status": locked["status"]},
                after={
                    "tier": FREE_TIER,
                    "periodEnd": locked["current_period_end"].isoformat(),
                },
            )
            ids = [r[0] for r in await conn.fetch(_LIVE_ENVIRONMENTS, tenant)]
            await scope.bump(ids, flags=False)  # the plan, not the flag set
        done.period_ends.append(tenant)
        done.changes += scope.changes


async def housekeep(pool: asyncpg.Pool, retention_days: int) -> Pass:
    """One pass (see the module's docstring)."""
    done = Pass()
    async with pool.acquire() as proxy:
        conn = cast(asyncpg.Connection, proxy)
        await clean_up(conn, retention_days, done)
        await end_periods(conn, done)
    return done


async def run(pool: asyncpg.Pool, bus: Bus, *, retention_days: int, interval: float) -> None:
    """Forever: ``interval`` seconds, then a pass (runs as a background task)."""
    while True:
        await asyncio.sleep(interval)
        try:
            done = await housekeep(pool, retention_days)
        except POSTGRES_ERRORS as exc:
            log.warning("housekeeping failed", extra=fields(error=describe(exc)))
        else:
            bus.publish(done.changes)
            if done.period_ends:
                log.info(
                    "subscription periods ended: plans moved to free",
                    extra=fields(tenants=done.period_ends),
                )
            log.debug(
                "housekeeping",
                extra=fields(
                    idempotency_keys=done.idempotency_keys,
                    usage_batches=done.usage_batches,
                    stripe_events=done.stripe_events,
                ),
            )
