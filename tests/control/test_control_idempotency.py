"""Idempotency-Key: a retried POST gets the first answer and changes nothing."""

from __future__ import annotations

import asyncio

import asyncpg
from support.control_testkit import Control, control_settings, start_control


async def counts(db: asyncpg.Connection) -> tuple[int, int, int]:
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM projects), (SELECT count(*) FROM flags),
                  (SELECT count(*) FROM audit_log)"""
    )
    assert row is not None
    return row[0], row[1], row[2]


async def test_a_retry_replays_the_first_answer(control: Control, db: asyncpg.Connection) -> None:
    key = {"Idempotency-Key": "create-shop-1"}
    first = await control.post("/projects", {"key": "shop"}, headers=key)
    assert first.status == 201
    assert "Idempotent-Replayed" not in first.headers
    before = await counts(db)
    second = await control.post("/projects", {"key": "shop"}, headers=key)
    assert second.status == 201
    assert second.raw == first.raw
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await counts(db) == before
    # Without the key the same request is a new attempt, and the key is taken.
    assert (await control.post("/projects", {"key": "shop"})).status == 409


async def test_same_key_for_another_request_is_422(
    control: Control, db: asyncpg.Connection
) -> None:
    key = {"Idempotency-Key": "k-1"}
    assert (await control.post("/projects", {"key": "shop"}, headers=key)).status == 201
    before = await counts(db)
    other_body = await control.post("/projects", {"key": "blog"}, headers=key)
    assert other_body.status == 422
    assert "Idempotency-Key" in other_body.problem["detail"]
    other_path = await control.post("/projects/shop/environments", {"key": "shop"}, headers=key)
    assert other_path.status == 422
    assert await counts(db) == before


async def test_concurrent_retries_run_once(control: Control, db: asyncpg.Connection) -> None:
    await control.project("shop", ("dev",))
    before = await counts(db)
    body = {"key": "checkout", "type": "boolean", "variants": {"on": True, "off": False}}
    answers = await asyncio.gather(*(
        control.post("/projects/shop/flags", body, headers={"Idempotency-Key": "flag-1"})
        for _ in range(8)
    ))  # fmt: skip
    assert {a.status for a in answers} == {201}
    assert len({a.raw for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    projects, flags, audit_rows = await counts(db)
    assert (projects, flags, audit_rows) == (before[0], before[1] + 1, before[2] + 1)


async def test_failures_are_not_recorded(control: Control, db: asyncpg.Connection) -> None:
    key = {"Idempotency-Key": "env-1"}
    early = await control.post("/projects/shop/environments", {"key": "dev"}, headers=key)
    assert early.status == 404
    await control.project("shop", ())
    later = await control.post("/projects/shop/environments", {"key": "dev"}, headers=key)
    assert later.status == 201
    assert "Idempotent-Replayed" not in later.headers


async def test_a_replayed_key_creation_never_shows_the_secret_again(control: Control) -> None:
    await control.project("shop", ("dev",))
    key = {"Idempotency-Key": "key-1"}
    first = await control.post(
        "/projects/shop/environments/dev/keys", {"kind": "server"}, headers=key
    )
    assert first.body["key"].startswith("crv_srv_")
    replay = await control.post(
        "/projects/shop/environments/dev/keys", {"kind": "server"}, headers=key
    )
    assert replay.status == 201
    assert replay.body["key"] is None
    assert replay.body["apiKey"] == first.body["apiKey"]
    listed = await control.get("/projects/shop/environments/dev/keys")
    assert len(listed.body["items"]) == 1


async def test_keys_are_per_tenant_and_well_formed(
    control: Control, database_url: str, db: asyncpg.Connection
) -> None:
    other = await start_control(control_settings(database_url), db, "globex")
    try:
        key = {"Idempotency-Key": "shared-name"}
        assert (await control.post("/projects", {"key": "shop"}, headers=key)).status == 201
        theirs = await other.post("/projects", {"key": "shop"}, headers=key)
        assert theirs.status == 201
        assert "Idempotent-Replayed" not in theirs.headers
    finally:
        await other.client.close()
    too_long = await control.post("/projects", {"key": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert too_long.status == 400
    assert (
        await control.post("/projects", {"key": "x"}, headers={"Idempotency-Key": ""})
    ).status == 400


async def test_keys_expire_after_a_day(control: Control, db: asyncpg.Connection) -> None:
    key = {"Idempotency-Key": "old-key"}
    assert (await control.post("/projects", {"key": "shop"}, headers=key)).status == 201
    await db.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    # Past its retention the key is free again, even for another request.
    reused = await control.post("/projects", {"key": "blog"}, headers=key)
    assert reused.status == 201
    assert "Idempotent-Replayed" not in reused.headers
    replayed = await control.post("/projects", {"key": "blog"}, headers=key)
    assert replayed.headers["Idempotent-Replayed"] == "true"


async def test_the_same_json_in_another_key_order_is_the_same_request(
    control: Control, db: asyncpg.Connection
) -> None:
    key = {"Idempotency-Key": "order-1", "Content-Type": "application/json"}
    first = await control.post("/projects", data=b'{"key": "shop", "name": "Shop"}', headers=key)
    assert first.status == 201
    before = await counts(db)
    again = await control.post(
        "/projects", data=b'{ "name" : "Shop",\n  "key" : "shop" }', headers=key
    )
    assert again.status == 201, again.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.raw == first.raw
    assert await counts(db) == before


async def test_a_repeated_json_key_is_refused_by_name(control: Control) -> None:
    answer = await control.post(
        "/projects",
        data=b'{"key": "shop", "name": "A", "name": "B"}',
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 400
    assert "'name' more than once" in answer.problem["detail"], answer.problem
