"""Each tenant's plan to the edge Redis, next to its environments (DESIGN §9).

A plan change bumps every environment of the tenant; when syncd rebuilds one of them it
first reads the tenant's plan from Postgres (one statement) and writes it to
``{p}edge:{edge}:plans`` ahead of the environment (in the same script on a single Redis:
:meth:`crivline.edge_store.EdgeStore.apply`), so the plan is in Redis before the change
is announced, never over a newer revision.
The proxies read that hash on their usage flush interval, so a plan reaches them
within the flag-change bound plus that interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import asyncpg

from crivline.edge_store import PlanWrite
from crivline.plans import FREE_TIER, EdgePlan, edge_plan_value, effective_tier

# The plan in one statement: the subscription, the limits of its tier and those of the
# free tier (what a lapsed subscription, or a plan row removed by hand, falls back to).
_PLAN = """
SELECT s.plan_tier, s.status, s.current_period_end,
       coalesce((extract(epoch FROM s.updated_at) * 1000000)::bigint, 0) AS revision,
       pl.tier AS limits_tier, pl.evaluations_per_day, pl.streams_per_environment,
       fr.evaluations_per_day AS free_evaluations_per_day,
       fr.streams_per_environment AS free_streams_per_environment
  FROM tenants t
  LEFT JOIN subscriptions s ON s.tenant_id = t.id
  LEFT JOIN plans pl ON pl.tier = s.plan_tier
  LEFT JOIN plans fr ON fr.tier = $2
 WHERE t.id = $1
"""


async def load_plan(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> EdgePlan | None:
    """The plan ``tenant_id`` has at ``now`` (None: no such tenant)."""
    row = await conn.fetchrow(_PLAN, tenant_id, FREE_TIER)
    if row is None:
        return None
    tier = effective_tier(row["plan_tier"], row["status"], row["current_period_end"], now)
    if tier != FREE_TIER and row["limits_tier"] == tier:
        limits = (row["evaluations_per_day"], row["streams_per_environment"])
    else:  # the free tier, or a plan row removed by hand: enforce the free tier's
        tier = FREE_TIER
        limits = (row["free_evaluations_per_day"], row["free_streams_per_environment"])
    return EdgePlan(tier, *limits, row["revision"])


class PlanPublisher:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def read(self, tenant_id: str) -> PlanWrite | None:
        """The tenant's plan as the edge Redis holds it (None: no such tenant); the
        environment's write puts it there first (:meth:`EdgeStore.apply`)."""
        async with self.pool.acquire() as conn:
            plan = await load_plan(cast(asyncpg.Connection, conn), tenant_id, datetime.now(UTC))
        if plan is None:
            return None
        return PlanWrite(tenant_id, plan.revision, edge_plan_value(plan))
