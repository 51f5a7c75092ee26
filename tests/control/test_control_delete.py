"""Deleting (archiving) projects and environments through the real server."""

from __future__ import annotations

import asyncpg
from support.control_testkit import Control


async def _versions(db: asyncpg.Connection, project: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT e.key, e.version FROM environments e JOIN projects p ON p.id = e.project_id"
        " WHERE p.key = $1",
        project,
    )
    return {r["key"]: r["version"] for r in rows}


async def test_deleting_an_environment_takes_its_keys_and_moves_its_version(
    shop: Control, db: asyncpg.Connection
) -> None:
    server = await shop.post("/projects/shop/environments/prod/keys", {"kind": "server"})
    client = await shop.post("/projects/shop/environments/prod/keys", {"kind": "client"})
    old = await shop.post("/projects/shop/environments/prod/keys", {"kind": "client"})
    revoked = old.body["apiKey"]["id"]
    assert (await shop.delete(f"/projects/shop/environments/prod/keys/{revoked}")).status == 200
    before = await _versions(db, "shop")

    answer = await shop.delete("/projects/shop/environments/prod")

    assert answer.status == 200, answer
    assert answer.body["project"] == "shop"
    assert answer.body["environments"] == ["prod"]
    taken = {k["id"] for k in answer.body["keys"]}
    assert taken == {server.body["apiKey"]["id"], client.body["apiKey"]["id"]}
    assert all(k["revokedAt"] is not None for k in answer.body["keys"])
    after = await _versions(db, "shop")
    assert after["prod"] == before["prod"] + 1  # the edges wake and drop it
    assert after["dev"] == before["dev"]
    assert (await shop.get("/projects/shop/environments/prod")).status == 404
    listed = await shop.get("/projects/shop/environments")
    assert [e["key"] for e in listed.body["items"]] == ["dev"]
    flag = await shop.get("/projects/shop/flags/checkout")
    assert sorted(flag.body["environments"]) == ["dev"]
    assert (await shop.get("/projects/shop/environments/prod/keys")).status == 404
    again = await shop.delete("/projects/shop/environments/prod")
    assert again.status == 404
    assert again.headers["Content-Type"].startswith("application/problem+json")


async def test_deleting_a_project_takes_every_environment_and_is_audited(
    shop: Control, db: asyncpg.Connection
) -> None:
    key = await shop.post("/projects/shop/environments/dev/keys", {"kind": "server"})
    before = await _versions(db, "shop")

    answer = await shop.delete("/projects/shop")

    assert answer.status == 200, answer
    assert answer.body["environments"] == ["dev", "prod"]
    assert [k["id"] for k in answer.body["keys"]] == [key.body["apiKey"]["id"]]
    after = await _versions(db, "shop")
    assert {env: after[env] - before[env] for env in after} == {"dev": 1, "prod": 1}
    assert (await shop.get("/projects/shop")).status == 404
    assert (await shop.get("/projects")).body["items"] == []
    assert (await shop.get("/projects/shop/flags")).status == 404
    entry = await db.fetchrow(
        "SELECT actor, before, after FROM audit_log WHERE action = 'project.delete'"
    )
    assert entry is not None
    assert entry["before"]["deleted"]["environments"] == ["dev", "prod"]
    assert entry["after"] is None
    assert entry["before"]["key"] == "shop"
    # The key can be used again: a new, empty project.
    assert (await shop.post("/projects", {"key": "shop"})).status == 201
    assert (await shop.post("/projects/shop/environments", {"key": "prod"})).status == 201
    assert (await shop.get("/projects/shop/flags")).body["items"] == []


async def test_a_deleted_environment_leaves_room_on_the_plan(
    shop: Control, db: asyncpg.Connection
) -> None:
    # acme is on the free plan: three environments per project.
    assert (await shop.post("/projects/shop/environments", {"key": "qa"})).status == 201
    full = await shop.post("/projects/shop/environments", {"key": "staging"})
    assert full.status == 422
    assert (await shop.delete("/projects/shop/environments/qa")).status == 200
    assert (await shop.post("/projects/shop/environments", {"key": "staging"})).status == 201


async def test_deleting_what_does_not_exist_is_404_and_writes_nothing(
    shop: Control, db: asyncpg.Connection
) -> None:
    audited = await db.fetchval("SELECT count(*) FROM audit_log")
    assert (await shop.delete("/projects/nope")).status == 404
    assert (await shop.delete("/projects/shop/environments/nope")).status == 404
    assert (await shop.delete("/projects/nope/environments/dev")).status == 404
    assert (await shop.delete("/projects/Not%20a%20key")).status == 404
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audited
    unauthenticated = await shop.delete("/projects/shop", auth=False)
    assert unauthenticated.status == 401
    assert (await shop.get("/projects/shop")).status == 200
