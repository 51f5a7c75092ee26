"""Each tenant's plan, held in this process's memory, and the daily quota (DESIGN §9).

syncd writes the plan of every tenant the edge serves into ``{p}edge:{edge}:plans``
before it applies a change of that tenant's environments (see :mod:`syncd.plans`);
this process reads the whole hash every ``usage_flush_seconds`` (1 s), so a plan change
reaches it within the flag-change bound plus that second. Requests look plans up in a
dict; no request waits on Redis for one. A Redis that cannot be read leaves the plans
as they were.

**The daily quota.** An evaluation request (poll 200/304, OFREP single or bulk) is
refused when the tenant's evaluations of today — control's total plus what this edge
counted and control does not have yet, as read at this process's last flush, plus what
this process admitted since — reach the plan's ``evaluationsPerDay``. The answer is 429
with ``Retry-After`` (whole seconds to the end of the UTC day): on ``/sdk`` routes an
RFC 9457 problem (``type`` ``urn:crivline:problem:quota-exceeded``, ``limit``,
``plan``, ``resetsAt``), on OFREP routes the OFREP error shape (``errorCode``
``QUOTA_EXCEEDED``), whose providers back off on 429 + Retry-After. Streams already open
stay open. A tenant whose plan this process has not read yet, a plan without a limit,
and ``CRIVLINE_QUOTAS=off`` are never refused (metering goes on).

Bounds: one process of one edge stops at exactly the limit; other processes of the
same edge are seen at their next flush (1 s), other edges at their syncd's next flush
(``CRIVLINE_USAGE_FLUSH_INTERVAL``). So the overshoot is at most about
(processes × 1 s + edges × flush interval) × the tenant's request rate.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson
from aiohttp import web
from redis.asyncio import Redis

from crivline.keyspace import Keyspace
from crivline.plans import EdgePlan, day_end, read_edge_plans, seconds_to_reset
from crivline.tasks import every
from proxy.errors import error_response
from proxy.metering import Meter, today

log = logging.getLogger(__name__)


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
        await every(
            interval,
            self.refresh,
            logger=log,
            unavailable="plans unavailable; keeping the last ones read",
        )


QUOTA_PROBLEM = "urn:crivline:problem:quota-exceeded"


class Quota:
    """The daily-quota decision, from memory: the plans and the meter's totals."""

    def __init__(self, plans: PlanBook, meter: Meter, *, enforce: bool) -> None:
        self.plans = plans
        self.meter = meter
        self.enforce = enforce

    def refusal(self, tenant: str, *, ofrep: bool, day: int | None = None) -> web.Response | None:
        """None when the tenant may evaluate on UTC ``day`` (default: today); else the
        429 to answer."""
        if not self.enforce:
            return None
        plan = self.plans.plan(tenant)
        if plan is None or plan.evaluations_per_day is None:
            return None
        if self.meter.used_on(tenant, today() if day is None else day) < plan.evaluations_per_day:
            return None
        return _exceeded(plan, plan.evaluations_per_day, time.time(), ofrep=ofrep)


def _exceeded(plan: EdgePlan, limit: int, now: float, *, ofrep: bool) -> web.Response:
    moment = datetime.fromtimestamp(now, UTC)
    retry = str(seconds_to_reset(moment))
    resets = day_end(moment.date()).isoformat().replace("+00:00", "Z")
    detail = (
        f"the {plan.tier} plan's {limit} evaluations per day are used up; the quota resets"
        f" at {resets}"
    )
    headers = {"Retry-After": retry}
    if ofrep:
        return error_response(429, detail, code="QUOTA_EXCEEDED", headers=headers)
    body = {
        "type": QUOTA_PROBLEM, "title": "Daily quota exceeded", "status": 429,
        "detail": detail, "plan": plan.tier, "limit": limit, "resetsAt": resets,
    }  # fmt: skip
    return web.Response(
        status=429, body=orjson.dumps(body), content_type="application/problem+json",
        headers=headers,
    )  # fmt: skip
