"""API keys: created with the secret shown once, listed without it, revoked."""

from __future__ import annotations

import asyncpg
from support.control_testkit import Control

from control.store.scope import TenantScope
from crivline import tokens
from crivline.snapshot import load_snapshot

KEYS = "/projects/shop/environments/prod/keys"


async def env_id(db: asyncpg.Connection, key: str) -> str:
    return str(await db.fetchval("SELECT id FROM environments WHERE key = $1", key))


async def test_create_list_and_revoke(shop: Control, db: asyncpg.Connection) -> None:
    prod = await env_id(db, "prod")
    version = await db.fetchval("SELECT version FROM environments WHERE id = $1", prod)
    flags_version = await db.fetchval("SELECT flags_version FROM environments WHERE id = $1", prod)
    created = await shop.post(KEYS, {"kind": "server", "label": "checkout service"})
    assert created.status == 201
    secret = created.body["key"]
    record = created.body["apiKey"]
    assert secret.startswith("crv_srv_")
    assert record["displayPrefix"] == tokens.display_prefix(secret)
    assert (record["kind"], record["label"], record["revokedAt"]) == (
        "server", "checkout service", None,
    )  # fmt: skip
    assert created.body["environmentVersion"] == version + 1
    # Only the hash is stored, and the edge's snapshot now carries it.
    stored = await db.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", record["id"])
    assert bytes(stored) == tokens.digest(secret)
    snapshot = await load_snapshot(db, prod)
    assert snapshot is not None
    assert [k.key_hash for k in snapshot.keys] == [tokens.hex_digest(secret)]

    client = await shop.post(KEYS, {"kind": "client"})
    assert client.body["key"].startswith("crv_cli_")
    listed = await shop.get(KEYS)
    assert [k["id"] for k in listed.body["items"]] == [record["id"], client.body["apiKey"]["id"]]
    assert secret not in listed.raw.decode()
    assert (await shop.get("/projects/shop/environments/dev/keys")).body["items"] == []

    revoked = await shop.delete(f"{KEYS}/{record['id']}")
    assert revoked.status == 200
    assert revoked.body["revokedAt"] is not None
    after = await db.fetchval("SELECT version FROM environments WHERE id = $1", prod)
    assert after == version + 3  # created twice, revoked once
    snapshot = await load_snapshot(db, prod)
    assert snapshot is not None
    # Keys are the edge's business: the flag set SDKs are shown kept its version.
    assert (snapshot.version, snapshot.flags_version) == (after, flags_version)
    assert snapshot.served_version == flags_version
    assert tokens.hex_digest(secret) not in [k.key_hash for k in snapshot.keys]

    again = await shop.delete(f"{KEYS}/{record['id']}")  # revoking twice changes nothing
    assert again.status == 200
    assert again.body["revokedAt"] == revoked.body["revokedAt"]
    assert await db.fetchval("SELECT version FROM environments WHERE id = $1", prod) == after


async def test_key_input_and_unknown_ids(shop: Control) -> None:
    expiring = await shop.post(KEYS, {"kind": "client", "expiresAt": "2031-01-01T00:00:00Z"})
    assert expiring.status == 201
    assert expiring.body["apiKey"]["expiresAt"].startswith("2031-01-01T00:00:00")
    lowercase = await shop.post(KEYS, {"kind": "client", "expiresAt": "2031-06-30t23:59:60z"})
    assert lowercase.status == 201  # RFC 3339 allows it, leap second included
    past = await shop.post(KEYS, {"kind": "client", "expiresAt": "2001-01-01T00:00:00+02:00"})
    assert past.status == 422
    assert past.problem_paths() == ["expiresAt"]
    for body, path in (
        ({"kind": "server", "expiresAt": "9999-12-31T23:59:59-14:00"}, "expiresAt"),
        ({"kind": "admin"}, "kind"),
        ({"kind": "server", "expiresAt": "tomorrow"}, "expiresAt"),
        ({"kind": "server", "expiresAt": "2031-01-01T00:00:00"}, "expiresAt"),
        ({"label": "no kind"}, "kind"),
    ):
        answer = await shop.post(KEYS, body)
        assert answer.status == 400
        assert answer.problem_paths() == [path]
    assert (await shop.delete(f"{KEYS}/not-a-uuid")).status == 404
    assert (await shop.delete(f"{KEYS}/00000000-0000-0000-0000-000000000000")).status == 404
    key_id = expiring.body["apiKey"]["id"]
    # A key is addressed within its environment.
    assert (await shop.delete(f"/projects/shop/environments/dev/keys/{key_id}")).status == 404
    assert (
        await shop.post("/projects/shop/environments/qa/keys", {"kind": "server"})
    ).status == 404


async def test_a_flag_change_after_a_key_in_one_transaction_moves_the_flag_set_version(
    shop: Control, db: asyncpg.Connection
) -> None:
    """One bump per transaction: a write that bumped for a key and then changes the flag
    set leaves both versions at that one bump."""
    prod = await env_id(db, "prod")
    tenant = str(await db.fetchval("SELECT tenant_id FROM environments WHERE id = $1", prod))
    before = await db.fetchval("SELECT version FROM environments WHERE id = $1", prod)
    async with db.transaction():
        scope = TenantScope(db, tenant, "test")
        keys = await scope.bump([prod], flags=False)
        assert (
            await db.fetchval("SELECT flags_version FROM environments WHERE id = $1", prod)
            < keys[prod]
        )
        flags = await scope.bump([prod])
    assert keys == flags == {prod: before + 1}
    row = await db.fetchrow("SELECT version, flags_version FROM environments WHERE id = $1", prod)
    assert (row["version"], row["flags_version"]) == (before + 1, before + 1)
    assert len(scope.changes) == 1
