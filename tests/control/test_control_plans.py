"""Plans against a real control and Postgres: the limits on writes, Stripe's webhooks,
``/plan`` and ``/usage``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import stripe
from support.control_testkit import Answer, Control, control_settings, start_control

from crivline.seed import create_tenant, seed_demo, set_plan

SECRET = "whsec_plans_test"
PRICES = "price_pro=pro,price_ent=enterprise"


@pytest.fixture
async def billing(database_url: str, db: asyncpg.Connection) -> AsyncIterator[Control]:
    settings = control_settings(database_url, stripe_webhook_secret=SECRET, stripe_prices=PRICES)
    running = await start_control(settings, db)
    try:
        await running.project()
        yield running
    finally:
        await running.client.close()


def _subscription_event(
    event_id: str,
    *,
    kind: str = "updated",
    created: int = 1_800_000_000,
    tenant: str = "acme",
    price: str = "price_pro",
    status: str = "active",
) -> dict[str, Any]:
    return {
        "id": event_id, "object": "event", "type": f"customer.subscription.{kind}",
        "created": created,
        "data": {"object": {
            "object": "subscription", "id": "sub_1", "customer": "cus_1", "status": status,
            "cancel_at_period_end": False, "metadata": {"tenant": tenant},
            "current_period_start": created, "current_period_end": created + 30 * 86400,
            "items": {"data": [{"price": {"id": price}}]},
        }},
    }  # fmt: skip


async def _send(
    control: Control,
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    at: int | None = None,
    tamper: bool = False,
    header: str | None = None,
) -> Answer:
    payload = orjson.dumps(event).decode()
    if header is None:
        # Signed by Stripe's own library: what Stripe sends is what we must accept.
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret, int(time.time()) if at is None else at
        )
    sent = payload + " " if tamper else payload
    return await control.call(
        "POST", "/webhooks/stripe", data=sent.encode(), auth=False,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )  # fmt: skip


async def _versions(db: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT id::text AS id, version FROM environments WHERE tenant_id = $1", tenant_id
    )
    return {r["id"]: r["version"] for r in rows}


async def _flags_versions(db: asyncpg.Connection, tenant_id: str) -> dict[str, int]:
    """What SDKs are shown: a plan is enforced by the edge, no flag set changes with it."""
    rows = await db.fetch(
        "SELECT id::text AS id, flags_version FROM environments WHERE tenant_id = $1", tenant_id
    )
    return {r["id"]: r["flags_version"] for r in rows}


async def _written(db: asyncpg.Connection) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM stripe_events"),
        await db.fetchval("SELECT count(*) FROM subscriptions"),
        await db.fetchval("SELECT count(*) FROM audit_log WHERE entity_type = 'subscription'"),
    )


# -- Stripe webhooks ------------------------------------------------------------------------


async def test_a_subscription_event_sets_the_plan_audited_and_bumped(
    billing: Control, db: asyncpg.Connection
) -> None:
    before = await _versions(db, billing.tenant_id)
    flags_before = await _flags_versions(db, billing.tenant_id)
    answer = await _send(billing, _subscription_event("evt_a", kind="created"))
    assert answer.status == 200, answer
    assert answer.body["result"] == "applied"
    plan = (await billing.get("/plan")).body
    assert (plan["tier"], plan["status"]) == ("pro", "active")
    assert plan["limits"]["evaluationsPerDay"] == 1_000_000
    assert plan["subscription"]["stripeSubscriptionId"] == "sub_1"
    after = await _versions(db, billing.tenant_id)
    assert all(after[env] == before[env] + 1 for env in before)  # every environment
    assert await _flags_versions(db, billing.tenant_id) == flags_before
    entry = await db.fetchrow(
        "SELECT actor, action, after FROM audit_log WHERE entity_type = 'subscription'"
    )
    assert entry["actor"] == "stripe:evt_a"
    assert entry["after"]["tier"] == "pro"


async def test_a_redelivered_event_changes_nothing(
    billing: Control, db: asyncpg.Connection
) -> None:
    event = _subscription_event("evt_same")
    assert (await _send(billing, event)).body["result"] == "applied"
    written, versions = await _written(db), await _versions(db, billing.tenant_id)
    again = await _send(billing, event)
    assert again.status == 200
    assert again.body["result"] == "duplicate"
    assert await _written(db) == written
    assert await _versions(db, billing.tenant_id) == versions


async def test_an_older_event_never_overwrites_a_newer_one(
    billing: Control, db: asyncpg.Connection
) -> None:
    newer = _subscription_event("evt_new", created=1_800_000_100, price="price_ent")
    older = _subscription_event("evt_old", kind="created", created=1_800_000_000)
    assert (await _send(billing, newer)).body["result"] == "applied"
    stale = await _send(billing, older)
    assert stale.status == 200
    assert stale.body["result"] == "stale"
    assert (await billing.get("/plan")).body["tier"] == "enterprise"
    outcomes = dict(await db.fetch("SELECT id, outcome FROM stripe_events"))
    assert outcomes == {"evt_new": "applied", "evt_old": "stale"}


async def test_deletion_puts_the_tenant_on_the_free_tier(
    billing: Control, db: asyncpg.Connection
) -> None:
    assert (await _send(billing, _subscription_event("evt_1", created=1_800_000_000))).status
    versions = await _versions(db, billing.tenant_id)
    # Stripe's deleted event carries the subscription as it ended; its period may run on.
    deleted = _subscription_event("evt_2", kind="deleted", created=1_800_000_050)
    assert (await _send(billing, deleted)).body["result"] == "applied"
    plan = (await billing.get("/plan")).body
    assert (plan["tier"], plan["status"], plan["subscribedTier"]) == ("free", "canceled", "pro")
    after = await _versions(db, billing.tenant_id)
    assert all(after[env] == versions[env] + 1 for env in versions)


async def test_a_webhook_whose_audit_row_cannot_be_written_commits_nothing(
    billing: Control, db: asyncpg.Connection
) -> None:
    versions = await _versions(db, billing.tenant_id)
    await db.execute("ALTER TABLE audit_log ADD CONSTRAINT no_audit CHECK (false) NOT VALID")
    try:
        answer = await _send(billing, _subscription_event("evt_blocked", kind="created"))
    finally:
        await db.execute("ALTER TABLE audit_log DROP CONSTRAINT no_audit")
    assert answer.status == 500
    assert await _written(db) == (0, 0, 0)
    assert await _versions(db, billing.tenant_id) == versions
    # Stripe retries; this time it is applied.
    again = await _send(billing, _subscription_event("evt_blocked", kind="created"))
    assert again.body["result"] == "applied"


@pytest.mark.parametrize("fault", ["tampered", "wrong secret", "stale", "missing", "garbage"])
async def test_a_request_stripe_did_not_sign_is_refused_and_writes_nothing(
    billing: Control, db: asyncpg.Connection, fault: str
) -> None:
    event = _subscription_event("evt_bad")
    if fault == "tampered":
        answer = await _send(billing, event, tamper=True)
    elif fault == "wrong secret":
        answer = await _send(billing, event, secret="whsec_someone_else")
    elif fault == "stale":
        answer = await _send(billing, event, at=int(time.time()) - 301)
    elif fault == "missing":
        answer = await billing.call(
            "POST", "/webhooks/stripe", data=orjson.dumps(event), auth=False
        )
    else:
        answer = await _send(billing, event, header="t=abc,v1=zz")
    assert answer.status == 400, answer
    assert (
        "Stripe-Signature" in answer.problem["detail"] or "signature" in answer.problem["detail"]
    ), answer.problem
    assert await _written(db) == (0, 0, 0)


async def test_an_unparseable_body_is_refused(billing: Control, db: asyncpg.Connection) -> None:
    payload = "{not json"
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET)
    answer = await billing.call(
        "POST", "/webhooks/stripe", data=payload.encode(), auth=False,
        headers={"Stripe-Signature": header},
    )  # fmt: skip
    assert answer.status == 400
    assert answer.problem["detail"] == "the body is not JSON"
    assert await _written(db) == (0, 0, 0)


@pytest.mark.parametrize(
    ("event", "says"),
    [
        (_subscription_event("evt_u", tenant="nobody"), "no tenant 'nobody'"),
        (_subscription_event("evt_p", price="price_unknown"), "price 'price_unknown'"),
        ({"id": "evt_i", "type": "invoice.paid", "created": 1, "data": {"object": {}}},
         "invoice.paid events do not change plans"),
    ],
)  # fmt: skip
async def test_what_does_not_concern_a_plan_is_acknowledged_without_a_change(
    billing: Control, db: asyncpg.Connection, event: dict[str, Any], says: str
) -> None:
    answer = await _send(billing, event)
    assert answer.status == 200
    assert answer.body["result"] == "ignored"
    assert says in answer.body["detail"]
    assert await _written(db) == (0, 0, 0)


async def test_without_a_secret_there_is_no_webhook(
    database_url: str, db: asyncpg.Connection
) -> None:
    running = await start_control(control_settings(database_url), db)
    try:
        answer = await _send(running, _subscription_event("evt_x"))
        assert answer.status == 404
        assert "CRIVLINE_STRIPE_WEBHOOK_SECRET" in answer.problem["detail"]
    finally:
        await running.client.close()


# -- limits on control's writes ------------------------------------------------------------


async def test_the_plan_limits_flags_and_environments_per_project(
    billing: Control, db: asyncpg.Connection
) -> None:
    await db.execute("UPDATE plans SET flags_per_project = 2 WHERE tier = 'free'")
    await billing.flag(key="one")
    await billing.flag(key="two")
    refused = await billing.post(
        "/projects/shop/flags",
        {"key": "three", "type": "boolean", "variants": {"on": True, "off": False}},
    )
    assert refused.status == 422
    assert refused.problem["limit"] == "flagsPerProject"
    assert refused.problem_paths() == ["limits.flagsPerProject"]
    assert "allows 2 flags in project 'shop'" in refused.problem["detail"]
    assert await db.fetchval("SELECT count(*) FROM flags WHERE key = 'three'") == 0
    # Archiving makes room; restoring past the limit is refused like a creation.
    assert (await billing.post("/projects/shop/flags/two/archive")).status == 200
    await billing.flag(key="three")
    assert (await billing.post("/projects/shop/flags/two/restore")).status == 422
    imported = await billing.post(
        "/projects/shop/environments/dev/import",
        {"flags": {"four": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}},
    )
    assert imported.status == 422
    assert imported.problem["limit"] == "flagsPerProject"
    # The fixture's project has dev and prod; the free tier allows three environments.
    assert (await billing.post("/projects/shop/environments", {"key": "stage"})).status == 201
    fourth = await billing.post("/projects/shop/environments", {"key": "qa"})
    assert fourth.status == 422
    assert fourth.problem["limit"] == "environmentsPerProject"
    # On a bigger plan the same writes go through.
    assert (await set_plan(db, "acme", "pro")).changed
    assert (await billing.post("/projects/shop/environments", {"key": "qa"})).status == 201
    assert (await billing.post("/projects/shop/flags/two/restore")).status == 200


async def test_a_manual_plan_is_audited_and_bumps_every_environment(
    billing: Control, db: asyncpg.Connection
) -> None:
    versions = await _versions(db, billing.tenant_id)
    flags_before = await _flags_versions(db, billing.tenant_id)
    change = await set_plan(db, "acme", "enterprise", actor="cli:test")
    assert (change.before, change.after) == ("free", "enterprise")
    assert all(v == versions[e] + 1 for e, v in (await _versions(db, billing.tenant_id)).items())
    assert await _flags_versions(db, billing.tenant_id) == flags_before
    assert not (await set_plan(db, "acme", "enterprise")).changed
    plan = (await billing.get("/plan")).body
    assert plan["tier"] == "enterprise"
    assert plan["subscription"]["source"] == "manual"
    assert plan["today"]["remainingEvaluations"] is None
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'plan.set'") == 1


# -- /plan and /usage ------------------------------------------------------------------------


async def _usage(db: asyncpg.Connection, tenant_id: str, day: date, kind: str, n: int) -> None:
    await db.execute(
        """INSERT INTO usage (tenant_id, environment_id, day, kind, count)
           SELECT $1, id, $2, $3, $4 FROM environments WHERE tenant_id = $1 AND key = 'dev'""",
        tenant_id,
        day,
        kind,
        n,
    )


async def test_plan_and_usage_report_only_the_callers_tenant(
    billing: Control, db: asyncpg.Connection
) -> None:
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    other = await create_tenant(db, "globex")
    globex = Control(billing.app, billing.client, other.token, other.id)
    await globex.project()
    await _usage(db, billing.tenant_id, today, "poll", 300)
    await _usage(db, billing.tenant_id, today, "ofrep_bulk", 200)
    await _usage(db, billing.tenant_id, today, "stream", 7)
    await _usage(db, billing.tenant_id, yesterday, "ofrep_single", 5)
    await _usage(db, other.id, today, "poll", 999)

    plan = (await billing.get("/plan")).body
    assert plan["tier"] == "free"
    assert plan["status"] == "none"
    assert plan["today"]["evaluations"] == 500  # streams have their own cap
    assert plan["today"]["streams"] == 7
    assert plan["today"]["remainingEvaluations"] == 500
    assert plan["today"]["resetsAt"] == f"{today + timedelta(days=1)}T00:00:00Z"
    assert (await globex.get("/plan")).body["today"]["evaluations"] == 999

    week = await billing.get(f"/usage?from={yesterday}&to={today}")
    assert week.status == 200
    assert [(i["day"], i["kind"], i["count"]) for i in week.body["items"]] == [
        (str(yesterday), "ofrep_single", 5),
        (str(today), "ofrep_bulk", 200),
        (str(today), "poll", 300),
        (str(today), "stream", 7),
    ]
    assert {(i["project"], i["environment"]) for i in week.body["items"]} == {("shop", "dev")}
    theirs = (await globex.get(f"/usage?from={yesterday}")).body["items"]
    assert [(i["kind"], i["count"]) for i in theirs] == [("poll", 999)]
    assert [i["count"] for i in (await billing.get("/usage")).body["items"]] == [200, 300, 7]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("from=2026-13-01", "query parameter from"),
        ("to=yesterday", "query parameter to"),
        ("from=2026-01-01T00:00", "query parameter from"),
        ("from=2026-02-01&to=2026-01-01", "to must not be before from"),
        ("from=2024-01-01&to=2026-01-01", "from and to"),
    ],
)
async def test_bad_usage_parameters_are_named(billing: Control, query: str, named: str) -> None:
    answer = await billing.get(f"/usage?{query}")
    assert answer.status == 400
    assert named in answer.problem["detail"]


async def test_plan_and_usage_need_a_token(billing: Control) -> None:
    for path in ("/plan", "/usage"):
        assert (await billing.get(path, auth=False)).status == 401


async def test_the_demo_tenant_is_uncapped(db: asyncpg.Connection) -> None:
    await seed_demo(db)
    row = await db.fetchrow(
        """SELECT p.* FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id
             JOIN plans p ON p.tier = s.plan_tier WHERE t.key = 'demo'"""
    )
    assert row["tier"] == "enterprise"
    assert [row[c] for c in ("evaluations_per_day", "streams_per_environment")] == [None, None]
