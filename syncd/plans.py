"""Each tenant's plan to the edge Redis, next to its environments (DESIGN §9).

A plan change bumps every environment of the tenant; when syncd rebuilds one of them it
first reads the tenant's plan from Postgres (one statement) and writes it to
``{p}edge:{edge}:plans`` ahead of the environment, in the same round trip (so the plan
is in Redis before the change is announced), never over a newer revision.
The proxies read that hash on their usage flush interval, so a plan reaches them
within the flag-change bound plus that interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import asyncpg
from redis.asyncio import Redis

from crivline.edge_store import ScriptCall
from crivline.keyspace import Keyspace
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
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keyspace: Keyspace) -> None:
        self.pool = pool
        self.keyspace = keyspace
        self._write = redis.register_script(_WRITE)

    async def read(self, tenant_id: str) -> ScriptCall | None:
        """The tenant's plan as the write that puts it into the edge Redis (None: no such
        tenant). The caller sends it before the environment's write, in its round trip."""
        async with self.pool.acquire() as conn:
            plan = await load_plan(cast(asyncpg.Connection, conn), tenant_id, datetime.now(UTC))
        if plan is None:
            return None
        return ScriptCall(
            self._write, [self.keyspace.plans], [tenant_id, plan.revision, edge_plan_value(plan)]
        )
