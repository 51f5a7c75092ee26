"""Plans and their limits, and which plan a subscription gives (pure, no I/O).

A tenant's plan is the tier of its ``subscriptions`` row while that subscription pays
for it: ``trialing``, ``active`` and ``past_due`` (Stripe keeps retrying the payment, so
service goes on) keep the tier; ``canceled``, ``incomplete``, ``incomplete_expired`` and
``paused`` fall back to the free tier at once; ``unpaid`` falls back when its current
period has ended. No row at all is the free tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson

FREE_TIER = "free"
UNCAPPED_TIER = "enterprise"  # the demo tenant's, and every limit NULL

# The kinds of SDK request the edge counts (usage.kind).
USAGE_KINDS = ("poll", "poll_not_modified", "ofrep_single", "ofrep_bulk", "stream")
# What counts against evaluations_per_day: every evaluation request; streams have a cap
# of their own (streams_per_environment).
EVALUATION_KINDS = ("poll", "poll_not_modified", "ofrep_single", "ofrep_bulk")

_PAYING = frozenset({"trialing", "active", "past_due"})
PAYING_UNTIL_PERIOD_END = frozenset({"unpaid"})  # their tier ends with their period


@dataclass(frozen=True, slots=True)
class Limits:
    """One tier's limits; None is no limit."""

    tier: str
    name: str
    evaluations_per_day: int | None
    streams_per_environment: int | None
    flags_per_project: int | None
    environments_per_project: int | None

    @classmethod
    def from_row(cls, row: Any) -> Limits:
        return cls(
            row["tier"],
            row["name"],
            row["evaluations_per_day"],
            row["streams_per_environment"],
            row["flags_per_project"],
            row["environments_per_project"],
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "evaluationsPerDay": self.evaluations_per_day,
            "streamsPerEnvironment": self.streams_per_environment,
            "flagsPerProject": self.flags_per_project,
            "environmentsPerProject": self.environments_per_project,
        }


@dataclass(frozen=True, slots=True)
class EdgePlan:
    """What an edge enforces for one tenant: its plan's edge-side limits.

    ``revision`` orders plan changes (the subscription row's last change, in µs; 0 for
    a tenant without one), so an edge never replaces a plan with an older one.
    """

    tier: str
    evaluations_per_day: int | None
    streams_per_environment: int | None
    revision: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "tier": self.tier,
                "evaluationsPerDay": self.evaluations_per_day,
                "streamsPerEnvironment": self.streams_per_environment,
                "revision": self.revision,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> EdgePlan | None:
        """The plan, or None when ``raw`` is not one (a newer format, a damaged value)."""
        try:
            doc = orjson.loads(raw)
            plan = cls(
                doc["tier"], doc["evaluationsPerDay"], doc["streamsPerEnvironment"], doc["revision"]
            )
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        limits = (plan.evaluations_per_day, plan.streams_per_environment)
        if not isinstance(plan.tier, str) or not all(v is None or type(v) is int for v in limits):
            return None
        return plan


def edge_plan_value(plan: EdgePlan) -> bytes:
    """A plan as the edge Redis holds it: ``{revision}|{JSON}`` (see crivline.keyspace)."""
    return f"{plan.revision}|".encode() + plan.to_json()


def read_edge_plans(raw: Mapping[bytes | str, bytes | str]) -> dict[str, EdgePlan]:
    """The edge's plans hash, tenant id → plan; malformed entries are left out."""
    out: dict[str, EdgePlan] = {}
    for tenant, value in raw.items():
        text = value.decode() if isinstance(value, bytes) else value
        _, sep, doc = text.partition("|")
        plan = EdgePlan.from_json(doc) if sep else None
        if plan is not None:
            out[tenant.decode() if isinstance(tenant, bytes) else tenant] = plan
    return out


def effective_tier(
    tier: str | None, status: str | None, period_end: datetime | None, now: datetime
) -> str:
    """The tier a subscription (None: no row) gives at ``now``."""
    if tier is None or status is None:
        return FREE_TIER
    if status in _PAYING:
        return tier
    if status in PAYING_UNTIL_PERIOD_END and period_end is not None and now < period_end:
        return tier
    return FREE_TIER


def utc_day(now: datetime) -> date:
    return now.astimezone(UTC).date()


def day_end(day: date) -> datetime:
    """When a UTC day's quota resets: the next midnight, UTC."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def seconds_to_reset(now: datetime) -> int:
    """Whole seconds from ``now`` to the next UTC midnight, at least 1 (Retry-After)."""
    left = (day_end(utc_day(now)) - now).total_seconds()
    return max(1, int(-(-left // 1)))
