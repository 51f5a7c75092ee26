"""The tenant's plan and usage: what it may do, what it did today and on other days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from control.http import json_response
from control.routing import Api, Reply
from control.tx import reading
from crivline.errors import BadRequest
from crivline.plans import EVALUATION_KINDS, FREE_TIER, day_end, utc_day

api = Api("/api/v1")
MAX_USAGE_DAYS = 366


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@api.operation(
    "GET", "/plan", operation_id="getPlan", tag="plan",
    summary="The tenant's plan, its limits, and today's usage against them",
    replies=(Reply(200, "The plan and today's usage", "Plan"),), problems=(401,),
)  # fmt: skip
async def get_plan(request: web.Request) -> web.Response:
    """Today is the UTC day; usage counts what the edges have reported so far (each edge
    reports every ``CRIVLINE_USAGE_FLUSH_INTERVAL``), so it trails the edges by that much."""
    now = datetime.now(UTC)
    today = utc_day(now)
    async with reading(request) as store:
        limits, subscription = await store.plans.current(now)
        totals = await store.plans.usage_totals(today)
    evaluations = sum(totals.get(kind, 0) for kind in EVALUATION_KINDS)
    limit = limits.evaluations_per_day
    body = {
        "tier": limits.tier,
        "name": limits.name,
        "status": "none" if subscription is None else subscription.status,
        "limits": limits.to_api(),
        "subscription": None if subscription is None else subscription.to_api(),
        "today": {
            "day": today.isoformat(),
            "evaluations": evaluations,
            "streams": totals.get("stream", 0),
            "remainingEvaluations": None if limit is None else max(0, limit - evaluations),
            "resetsAt": _iso(day_end(today)),
        },
    }
    if subscription is not None and limits.tier != subscription.plan_tier:
        body["subscribedTier"] = subscription.plan_tier  # paid for, not in force
    elif subscription is None:
        body["subscribedTier"] = FREE_TIER
    return json_response(body)


def _query_day(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"query parameter {name} must be a date, YYYY-MM-DD, got {raw[:40]!r}"
        ) from None


@api.operation(
    "GET", "/usage", operation_id="getUsage", tag="plan",
    summary="Usage per UTC day, environment and kind", query=("from", "to"),
    replies=(Reply(200, "Counts per day, environment and kind", "UsageReport"),),
    problems=(400, 401),
)  # fmt: skip
async def get_usage(request: web.Request) -> web.Response:
    """``from`` and ``to`` are UTC days, both included (default: today); at most 366 days."""
    today = utc_day(datetime.now(UTC))
    first = _query_day(request, "from", today)
    last = _query_day(request, "to", max(first, today) if "from" in request.query else today)
    if last < first:
        raise BadRequest("query parameter to must not be before from")
    if last - first >= timedelta(days=MAX_USAGE_DAYS):
        raise BadRequest(f"query parameters from and to may span at most {MAX_USAGE_DAYS} days")
    async with reading(request) as store:
        items = await store.plans.usage(first, last)
    return json_response({"from": first.isoformat(), "to": last.isoformat(), "items": items})
