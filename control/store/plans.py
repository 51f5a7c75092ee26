"""A tenant's plan, subscription and usage, and the plan limits control's writes obey.

Changing what a tenant's plan is changes what every edge enforces for it, so such a
write bumps every environment of the tenant (in the same transaction, with its audit
row), like a flag change: the edges pick the new limits up through the same path.

Flag and environment counts are checked by the write that would exceed them, under a
lock that makes concurrent creations in one project queue for the check: creating a
flag holds the project row FOR SHARE (see :mod:`control.store.flags`), so the check
takes a transaction advisory lock per project; creating an environment already holds
the project row exclusively. A downgrade removes nothing: a project over its new limit
keeps what it has and cannot grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from control.store.records import Project
from control.store.scope import TenantScope
from crivline.errors import FieldProblem, Unprocessable
from crivline.plans import FREE_TIER, Limits, effective_tier

_SUBSCRIPTION_COLUMNS = """s.plan_tier, s.status, s.stripe_customer_id, s.stripe_subscription_id,
    s.stripe_price_id, s.current_period_start, s.current_period_end, s.cancel_at_period_end,
    s.last_event_id, s.last_event_created, s.last_event_type, s.updated_at"""
_PLAN_COLUMNS = """tier, name, evaluations_per_day, streams_per_environment, flags_per_project,
    environments_per_project"""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    plan_tier: str
    status: str
    customer_id: str | None
    subscription_id: str | None
    price_id: str | None
    period_start: datetime | None
    period_end: datetime | None
    cancel_at_period_end: bool
    last_event_id: str | None
    last_event_created: datetime | None
    last_event_type: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> SubscriptionRow:
        return cls(
            row["plan_tier"],
            row["status"],
            row["stripe_customer_id"],
            row["stripe_subscription_id"],
            row["stripe_price_id"],
            row["current_period_start"],
            row["current_period_end"],
            row["cancel_at_period_end"],
            row["last_event_id"],
            row["last_event_created"],
            row["last_event_type"],
            row["updated_at"],
        )

    def tier_at(self, now: datetime) -> str:
        return effective_tier(self.plan_tier, self.status, self.period_end, now)

    def to_api(self) -> dict[str, Any]:
        return {
            "source": "stripe" if self.subscription_id is not None else "manual",
            "tier": self.plan_tier,
            "status": self.status,
            "stripeCustomerId": self.customer_id,
            "stripeSubscriptionId": self.subscription_id,
            "stripePriceId": self.price_id,
            "currentPeriodStart": _iso(self.period_start),
            "currentPeriodEnd": _iso(self.period_end),
            "cancelAtPeriodEnd": self.cancel_at_period_end,
            "updatedAt": _iso(self.updated_at),
        }


async def plan_limits(conn: asyncpg.Connection, tier: str) -> Limits | None:
    row = await conn.fetchrow(f"SELECT {_PLAN_COLUMNS} FROM plans WHERE tier = $1", tier)
    return None if row is None else Limits.from_row(row)


class PlanStore:
    def __init__(self, scope: TenantScope) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id

    # -- reading -------------------------------------------------------------------------

    async def subscription(self, lock: str = "") -> SubscriptionRow | None:
        row = await self.conn.fetchrow(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.tenant_id = $1 {lock}",
            self.tenant_id,
        )
        return None if row is None else SubscriptionRow.from_row(row)

    async def current(self, now: datetime) -> tuple[Limits, SubscriptionRow | None]:
        """The limits the tenant has at ``now``, and its subscription row (if any)."""
        subscription = await self.subscription()
        tier = FREE_TIER if subscription is None else subscription.tier_at(now)
        limits = await plan_limits(self.conn, tier)
        assert limits is not None, f"plan {tier!r} is referenced but missing"
        return limits, subscription

    async def usage_totals(self, day: date) -> dict[str, int]:
        """The tenant's central counts of ``day`` by kind (every environment)."""
        rows = await self.conn.fetch(
            """SELECT kind, sum(count)::bigint AS total FROM usage
                WHERE tenant_id = $1 AND day = $2 GROUP BY kind""",
            self.tenant_id,
            day,
        )
        return {r["kind"]: r["total"] for r in rows}

    async def usage(self, first: date, last: date) -> list[dict[str, Any]]:
        """Counts per day, environment and kind, ``first``..``last`` inclusive."""
        rows = await self.conn.fetch(
            """SELECT u.day, p.key AS project, e.key AS environment, u.kind, u.count
                 FROM usage u
                 JOIN environments e ON e.tenant_id = u.tenant_id AND e.id = u.environment_id
                 JOIN projects p ON p.tenant_id = e.tenant_id AND p.id = e.project_id
                WHERE u.tenant_id = $1 AND u.day BETWEEN $2 AND $3
                ORDER BY u.day, p.key, e.key, u.kind""",
            self.tenant_id,
            first,
            last,
        )
        return [
            {
                "day": r["day"].isoformat(),
                "project": r["project"],
                "environment": r["environment"],
                "kind": r["kind"],
                "count": r["count"],
            }
            for r in rows
        ]

    # -- limits on control's writes --------------------------------------------------------

    async def check_flag_room(self, project: Project, adding: int, now: datetime) -> None:
        """Refuse (422) if ``adding`` more live flags would pass the plan's limit."""
        limits, _ = await self.current(now)
        limit = limits.flags_per_project
        if limit is None or adding <= 0:
            return
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('crivline.flags:' || $1::text, 0))",
            project.id,
        )
        live = await self.conn.fetchval(
            "SELECT count(*) FROM flags WHERE tenant_id = $1 AND project_id = $2"
            " AND NOT is_archived",
            self.tenant_id,
            project.id,
        )
        if live + adding > limit:
            raise _over_limit(limits, "flagsPerProject", limit, f"flags in project {project.key!r}")

    async def check_environment_room(self, project: Project, now: datetime) -> None:
        """Refuse (422) a new environment past the plan's limit. The caller holds the
        project row exclusively, so concurrent creations queue before this check."""
        limits, _ = await self.current(now)
        limit = limits.environments_per_project
        if limit is None:
            return
        count = await self.conn.fetchval(
            "SELECT count(*) FROM environments WHERE tenant_id = $1 AND project_id = $2"
            " AND archived_at IS NULL",
            self.tenant_id,
            project.id,
        )
        if count + 1 > limit:
            raise _over_limit(
                limits, "environmentsPerProject", limit, f"environments in project {project.key!r}"
            )

    # -- writes ----------------------------------------------------------------------------

    async def environment_ids(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT id::text AS id FROM environments WHERE tenant_id = $1 AND archived_at IS NULL",
            self.tenant_id,
        )
        return [r["id"] for r in rows]

    async def audit_and_bump(
        self, before: SubscriptionRow | None, after: SubscriptionRow, now: datetime
    ) -> None:
        """The audit row of a subscription change; and, when it changes the plan the tenant
        has, a bump of every environment of the tenant so the edges follow."""
        await self.scope.audit(
            project_id=None,
            action="subscription.update" if before is not None else "subscription.create",
            entity_type="subscription",
            entity_id=None,
            entity_key=after.plan_tier,
            before=None if before is None else before.to_api(),
            after=after.to_api(),
        )
        tier_before = FREE_TIER if before is None else before.tier_at(now)
        if tier_before != after.tier_at(now):  # limits the edges enforce: no flag changed
            await self.scope.bump(await self.environment_ids(), flags=False)


def _over_limit(limits: Limits, name: str, limit: int, what: str) -> Unprocessable:
    return Unprocessable(
        f"the {limits.name} plan allows {limit} {what}; upgrade the plan for more",
        problems=[FieldProblem(f"limits.{name}", f"at most {limit} on the {limits.tier} plan")],
        extra={"limit": name, "limitValue": limit, "plan": limits.tier},
    )
