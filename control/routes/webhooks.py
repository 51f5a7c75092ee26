"""``POST /webhooks/stripe``: Stripe's subscription events set tenants' plans.

Stripe is the source of truth for billing; the ``subscriptions`` row is its local mirror.
An event is checked (signature, then shape) before anything is read or written, and
applied in one transaction: the event id recorded (a redelivery is acknowledged and
changes nothing), the subscription row (unless a newer event was already applied:
Stripe does not keep order and retries for days), an audit row, and — when the plan the
tenant has changes — a bump of every environment of the tenant, which carries it to
the edges.

What is acknowledged (200) without a change: event types other than
``customer.subscription.created/.updated/.deleted``, a subscription whose
``metadata.tenant`` names no tenant, and a price missing from ``CRIVLINE_STRIPE_PRICES``
(both logged; neither is recorded, so once the operator fixes the cause, Stripe's
"resend" applies it). Refused (400, nothing written): a missing or wrong signature, a
stale timestamp, a body that is not a Stripe event.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from control import bodies
from control.http import json_response
from control.routing import Api, Reply
from control.state import BUS, METRICS, POOL, SETTINGS, TRACING
from control.store.plans import PlanStore, SubscriptionRow, plan_limits
from control.store.scope import TenantScope
from control.stripe import (
    SUBSCRIPTION_EVENTS,
    Event,
    Subscription,
    WebhookRefused,
    is_newer,
    parse_event,
    parse_subscription,
    verify,
)
from control.tx import ACQUIRE_TIMEOUT, bind_tenant, connection
from crivline.errors import ApiError, BadRequest, Conflict, NotFound
from crivline.logs import fields
from crivline.tracing import SpanKind, traceparent_of

api = Api()
log = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO subscriptions AS s (tenant_id, plan_tier, status, stripe_customer_id,
    stripe_subscription_id, stripe_price_id, current_period_start, current_period_end,
    cancel_at_period_end, last_event_id, last_event_created, last_event_type)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (tenant_id) DO UPDATE SET
    plan_tier = EXCLUDED.plan_tier, status = EXCLUDED.status,
    stripe_customer_id = EXCLUDED.stripe_customer_id,
    stripe_subscription_id = EXCLUDED.stripe_subscription_id,
    stripe_price_id = EXCLUDED.stripe_price_id,
    current_period_start = EXCLUDED.current_period_start,
    current_period_end = EXCLUDED.current_period_end,
    cancel_at_period_end = EXCLUDED.cancel_at_period_end,
    last_event_id = EXCLUDED.last_event_id, last_event_created = EXCLUDED.last_event_created,
    last_event_type = EXCLUDED.last_event_type, updated_at = now()
RETURNING s.plan_tier, s.status, s.stripe_customer_id, s.stripe_subscription_id,
    s.stripe_price_id, s.current_period_start, s.current_period_end, s.cancel_at_period_end,
    s.last_event_id, s.last_event_created, s.last_event_type, s.updated_at
"""


def _answer(result: str, detail: str) -> web.Response:
    return json_response({"received": True, "result": result, "detail": detail})


@api.operation(
    "POST", "/webhooks/stripe", operation_id="stripeWebhook", tag="billing",
    summary="Stripe subscription events (signed with the endpoint secret)",
    body_schema="StripeEvent", authenticated=False, headers=("StripeSignature",),
    replies=(Reply(200, "Received: applied, or acknowledged without a change",
                   "WebhookReceipt"),),
    problems=(400, 404, 409, 413, 503),
)  # fmt: skip
async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.stripe_webhook_secret is None:
        raise NotFound("Stripe webhooks are not set up here (CRIVLINE_STRIPE_WEBHOOK_SECRET)")
    payload = await bodies.read_bytes(request)
    try:
        verify(
            request.headers.get("Stripe-Signature"),
            payload,
            settings.stripe_webhook_secret.reveal(),
            time.time(),
        )
        event = parse_event(payload)
        if event.type not in SUBSCRIPTION_EVENTS:
            return _answer("ignored", f"{event.type} events do not change plans")
        subscription = parse_subscription(event.data)
    except WebhookRefused as refused:
        request.app[METRICS].writes.labels("stripe.refused").inc()
        raise BadRequest(str(refused)) from None
    # A control write like the API's: its trace context goes with the bumps it makes.
    with request.app[TRACING].span(
        "control write",
        headers=request.headers,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": "/webhooks/stripe",
            "crivline.stripe_event": event.type,
        },
        expected=(ApiError,),
    ) as span:
        return await _apply(request, event, subscription, traceparent_of(span))


async def _apply(
    request: web.Request, event: Event, sub: Subscription, traceparent: str | None
) -> web.Response:
    app = request.app
    tier = app[SETTINGS].stripe_prices.tier(sub.price_id)
    context = fields(event=event.id, type=event.type, tenant=sub.tenant_key, price=sub.price_id)
    async with app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as proxy:
        conn = connection(proxy)
        if tier is None or await plan_limits(conn, tier) is None:
            log.warning("stripe event for a price with no plan; not applied", extra=context)
            return _answer("ignored", f"price {sub.price_id!r} is not in CRIVLINE_STRIPE_PRICES")
        # Not tenant-authenticated: the tenant comes from the subscription's metadata,
        # through the one lookup control may make before it has a tenant.
        tenant_id = await conn.fetchval(
            "SELECT crivline_tenant_by_key($1)::text", sub.tenant_key or ""
        )
        if tenant_id is None:
            log.warning("stripe event for an unknown tenant; not applied", extra=context)
            return _answer("ignored", f"no tenant {sub.tenant_key!r} (metadata.tenant)")
        scope = TenantScope(conn, tenant_id, f"stripe:{event.id}", traceparent)
        try:
            async with conn.transaction():
                await bind_tenant(conn, tenant_id)
                result = await _write(scope, event, sub, tier)
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"subscription {sub.subscription_id} already belongs to another tenant"
            ) from None
    if result == "applied":
        app[METRICS].writes.labels("stripe.applied").inc()
        app[METRICS].environment_bumps.inc(len(scope.changes))
        app[BUS].publish(scope.changes)
    log.info(f"stripe event {result}", extra=context)
    details = {
        "applied": f"tenant {sub.tenant_key} is subscribed to {tier} ({sub.status})",
        "duplicate": "this event was already received",
        "stale": "a newer event for this subscription was already applied",
    }
    return _answer(result, details[result])


async def _write(scope: TenantScope, event: Event, sub: Subscription, tier: str) -> str:
    conn = scope.conn
    taken = await conn.fetchval(
        """INSERT INTO stripe_events (id, type, created, tenant_id, outcome)
           VALUES ($1, $2, $3, $4, 'applied') ON CONFLICT (id) DO NOTHING RETURNING id""",
        event.id,
        event.type,
        event.created,
        scope.tenant_id,
    )
    if taken is None:
        return "duplicate"
    plans = PlanStore(scope)
    before = await plans.subscription("FOR UPDATE")
    if before is not None and not is_newer(
        event, before.last_event_created, before.last_event_type
    ):
        await conn.execute("UPDATE stripe_events SET outcome = 'stale' WHERE id = $1", event.id)
        return "stale"
    # A deleted subscription has ended, whatever its period said.
    status = "canceled" if event.type == "customer.subscription.deleted" else sub.status
    values: list[Any] = [
        scope.tenant_id, tier, status, sub.customer_id, sub.subscription_id, sub.price_id,
        sub.period_start, sub.period_end, sub.cancel_at_period_end, event.id, event.created,
        event.type,
    ]  # fmt: skip
    row = await conn.fetchrow(_UPSERT, *values)
    assert row is not None
    await plans.audit_and_bump(before, SubscriptionRow.from_row(row), datetime.now(UTC))
    return "applied"
