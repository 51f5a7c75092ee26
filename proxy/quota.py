"""Each tenant's plan, held in this process's memory (DESIGN §9).

syncd writes the plan of every tenant the edge serves into ``{p}edge:{edge}:plans``
before it applies a change of that tenant's environments (see :mod:`syncd.plans`);
this process reads the whole hash every ``usage_flush_seconds`` (1 s), so a plan change
reaches it within the flag-change bound plus that second. Requests look plans up in a
dict; no request waits on Redis for one. A Redis that cannot be read leaves the plans
as they were.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.keyspace import Keyspace
from crivline.logs import fields
from crivline.plans import EdgePlan, read_edge_plans

log = logging.getLogger("proxy.quota")


class PlanBook:
    def __init__(self, redis: Redis, keyspace: Keyspace) -> None:
        self._redis = redis
        self._ks = keyspace
        self.plans: dict[str, EdgePlan] = {}

    def plan(self, tenant: str) -> EdgePlan | None:
        """The tenant's plan as this edge last read it (None: not known yet)."""
        return self.plans.get(tenant)

    async def refresh(self) -> None:
        raw = await self._redis.hgetall(self._ks.plans)
        self.plans = read_edge_plans(raw)

    async def run(self, interval: float) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    log.info("plans unavailable; keeping the last ones read",
                             extra=fields(error=str(exc)))  # fmt: skip
                failing = True
            await asyncio.sleep(interval)
