"""Each tenant's plan to the edge Redis, next to its environments (DESIGN §9).

A plan change bumps every environment of the tenant; when syncd rebuilds one of them it
first reads the tenant's plan from Postgres and writes it to ``{p}edge:{edge}:plans``
(so the plan is in Redis before the change is announced), never over a newer revision.
The proxies read that hash on their usage flush interval, so a plan reaches them
within the flag-change bound plus that interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import asyncpg
from redis.asyncio import Redis

from crivline.keyspace import Keyspace
from crivline.plans import FREE_TIER, EdgePlan, edge_plan_value, effective_tier

_PLAN = """
SELECT s.plan_tier, s.status, s.current_period_end,
       coalesce((extract(epoch FROM s.updated_at) * 1000000)::bigint, 0) AS revision
  FROM tenants t LEFT JOIN subscriptions s ON s.tenant_id = t.id
 WHERE t.id = $1
"""
_LIMITS = "SELECT evaluations_per_day, streams_per_environment FROM plans WHERE tier = $1"

# KEYS: plans hash. ARGV: tenant, revision, "revision|json".
_WRITE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
    local rev = tonumber(string.match(current, '^(%d+)|'))
    if rev and rev > tonumber(ARGV[2]) then
        return 0
    end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


async def load_plan(conn: asyncpg.Connection, tenant_id: str, now: datetime) -> EdgePlan | None:
    """The plan ``tenant_id`` has at ``now`` (None: no such tenant)."""
    row = await conn.fetchrow(_PLAN, tenant_id)
    if row is None:
        return None
    tier = effective_tier(row["plan_tier"], row["status"], row["current_period_end"], now)
    limits = await conn.fetchrow(_LIMITS, tier)
    if limits is None:  # a plan row removed by hand: enforce the free tier's
        tier = FREE_TIER
        limits = await conn.fetchrow(_LIMITS, tier)
    assert limits is not None
    return EdgePlan(
        tier, limits["evaluations_per_day"], limits["streams_per_environment"], row["revision"]
    )


class PlanPublisher:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keyspace: Keyspace) -> None:
        self.pool = pool
        self.keyspace = keyspace
        self._write = redis.register_script(_WRITE)

    async def publish(self, tenant_id: str) -> EdgePlan | None:
        async with self.pool.acquire() as conn:
            plan = await load_plan(cast(asyncpg.Connection, conn), tenant_id, datetime.now(UTC))
        if plan is None:
            return None
        await self._write(
            keys=[self.keyspace.plans], args=[tenant_id, plan.revision, edge_plan_value(plan)]
        )
        return plan
