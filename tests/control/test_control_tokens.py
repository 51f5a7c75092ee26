"""Scoped management tokens: read / write / admin, checked per operation, issued and
revoked through the API by an admin token, audited, stored only as hashes."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from support.control_testkit import Control

from crivline import tokens
from crivline.seed import create_tenant

TOKENS = "/tokens"
KEYS = "/projects/shop/environments/prod/keys"


async def issue(control: Control, scope: str, label: str = "") -> str:
    answer = await control.post(TOKENS, {"scope": scope, "label": label})
    assert answer.status == 201, answer
    secret: str = answer.body["secret"]
    return secret


async def test_tenant_create_issues_an_admin_token(db: asyncpg.Connection) -> None:
    created = await create_tenant(db, "fresh")
    scope = await db.fetchval(
        "SELECT scope FROM management_tokens WHERE token_hash = $1", tokens.digest(created.token)
    )
    assert scope == "admin"


async def test_a_read_token_reads_and_is_told_which_scope_a_write_needs(shop: Control) -> None:
    read = await issue(shop, "read", "dashboard")
    assert (await shop.get("/projects/shop/flags", token=read)).status == 200
    assert (await shop.get("/audit", token=read)).status == 200
    refused = await shop.post("/projects", {"key": "other"}, token=read)
    assert refused.status == 403
    problem = refused.problem
    assert problem["requiredScope"] == "write"
    assert problem["tokenScope"] == "read"
    assert "'write' scope" in problem["detail"]
    for method, path in (("PATCH", "/projects/shop/flags/checkout"),
                         ("DELETE", "/projects/shop/segments/none")):  # fmt: skip
        answer = await shop.call(method, "/api/v1" + path, {"name": "x"}, token=read)
        assert answer.status == 403, (method, path, answer)
    # Refused before anything ran: no project, no audit row.
    assert (await shop.get("/projects/other")).status == 404


async def test_a_write_token_changes_flags_but_not_access(shop: Control) -> None:
    write = await issue(shop, "write")
    assert (await shop.post("/projects", {"key": "other"}, token=write)).status == 201
    for method, path, body in (
        ("POST", KEYS, {"kind": "server"}),
        ("GET", TOKENS, None),
        ("POST", TOKENS, {"scope": "read"}),
        ("DELETE", TOKENS + "/00000000-0000-4000-8000-000000000000", None),
        ("DELETE", KEYS + "/00000000-0000-4000-8000-000000000000", None),
    ):
        answer = await shop.call(method, "/api/v1" + path, body, token=write)
        assert answer.status == 403, (method, path, answer)
        assert answer.problem["requiredScope"] == "admin"
    assert (await shop.get(KEYS, token=write)).status == 200  # listing keys is a read


async def test_issue_list_and_revoke_hashes_only_and_audited(
    shop: Control, db: asyncpg.Connection
) -> None:
    created = await shop.post(TOKENS, {"scope": "write", "label": "ci"})
    assert created.status == 201
    secret = created.body["secret"]
    record = created.body["token"]
    assert secret.startswith("crv_mgt_")
    assert (record["scope"], record["label"], record["revokedAt"]) == ("write", "ci", None)
    assert record["displayPrefix"] == tokens.display_prefix(secret)
    row = await db.fetchrow("SELECT * FROM management_tokens WHERE id = $1", record["id"])
    assert bytes(row["token_hash"]) == tokens.digest(secret)
    assert secret not in orjson.dumps(dict(row), default=str).decode()
    listed = await shop.get(TOKENS)
    assert [t["scope"] for t in listed.body["items"]] == ["admin", "write"]
    assert secret not in listed.raw.decode()
    assert (await shop.get("/projects", token=secret)).status == 200

    revoked = await shop.delete(f"{TOKENS}/{record['id']}")
    assert revoked.status == 200
    assert revoked.body["revokedAt"] is not None
    assert (await shop.get("/projects", token=secret)).status == 401  # at once
    again = await shop.delete(f"{TOKENS}/{record['id']}")
    assert again.status == 200
    assert again.body["revokedAt"] == revoked.body["revokedAt"]

    audit = await db.fetch(
        "SELECT action, actor, after FROM audit_log WHERE entity_type = 'management_token'"
        " AND entity_id = $1 ORDER BY id",
        record["id"],
    )
    assert [r["action"] for r in audit] == ["management_token.create", "management_token.revoke"]
    assert all(r["actor"].startswith("token:") for r in audit)
    everything = orjson.dumps([dict(r) for r in audit], default=str).decode()
    assert secret not in everything
    assert tokens.hex_digest(secret) not in everything


async def test_a_replayed_issue_does_not_show_the_secret_again(shop: Control) -> None:
    key = {"Idempotency-Key": "issue-once"}
    first = await shop.post(TOKENS, {"scope": "read"}, headers=key)
    replay = await shop.post(TOKENS, {"scope": "read"}, headers=key)
    assert first.body["secret"].startswith("crv_mgt_")
    assert replay.status == 201
    assert replay.body["secret"] is None
    assert replay.body["token"] == first.body["token"]


async def test_bad_token_requests_are_precise(shop: Control) -> None:
    for body in ({"scope": "root"}, {}, {"scope": "read", "label": "x" * 201},
                 {"scope": "read", "tenant": "other"}):  # fmt: skip
        answer = await shop.post(TOKENS, body)
        assert answer.status in (400, 422), (body, answer)
        assert answer.problem_paths(), (body, answer)
    missing = await shop.delete(f"{TOKENS}/00000000-0000-4000-8000-000000000000")
    assert missing.status == 404
    assert (await shop.delete(f"{TOKENS}/not-a-uuid")).status == 404


async def test_another_tenants_token_cannot_be_seen_or_revoked(
    shop: Control, db: asyncpg.Connection
) -> None:
    other = await create_tenant(db, "globex")
    other_id = await db.fetchval(
        "SELECT id::text FROM management_tokens WHERE tenant_id = $1", other.id
    )
    assert (await shop.delete(f"{TOKENS}/{other_id}")).status == 404
    listed = await shop.get(TOKENS)
    assert other_id not in {t["id"] for t in listed.body["items"]}
    assert (await shop.get("/projects", token=other.token)).status == 200  # still live


async def test_the_openapi_document_names_each_operations_scope(control: Control) -> None:
    document = (await control.call("GET", "/openapi.json", auth=False)).body
    scopes = {
        op["operationId"]: op.get("x-crivline-scope")
        for path in document["paths"].values()
        for op in path.values()
    }
    assert scopes["listProjects"] == "read"
    assert scopes["createProject"] == "write"
    assert scopes["createApiKey"] == "admin"
    assert scopes["revokeApiKey"] == "admin"
    assert scopes["createManagementToken"] == "admin"
    assert scopes["ingestUsage"] is None  # not a management-token route
    for path in document["paths"].values():
        for op in path.values():
            scope = op.get("x-crivline-scope")
            if scope is not None:
                assert op["security"] == [{"managementToken": [scope]}]
                assert ("403" in op["responses"]) == (scope != "read")


async def test_the_last_admin_token_cannot_be_revoked(
    shop: Control, db: asyncpg.Connection
) -> None:
    listed = await shop.get(TOKENS)
    (first,) = [t["id"] for t in listed.body["items"] if t["scope"] == "admin"]
    refused = await shop.delete(f"{TOKENS}/{first}")
    assert refused.status == 409
    assert "last admin token" in refused.problem["detail"]
    assert (await shop.get("/projects")).status == 200  # still live, nothing audited
    assert not await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'management_token.revoke'"
    )
    # With a second admin token, either may go; then the other is the last one.
    second = await shop.post(TOKENS, {"scope": "admin", "label": "ops"})
    second_secret, second_id = second.body["secret"], second.body["token"]["id"]
    assert (await shop.delete(f"{TOKENS}/{first}")).status == 200
    assert (await shop.get("/projects")).status == 401  # the first token is gone
    assert (await shop.delete(f"{TOKENS}/{second_id}", token=second_secret)).status == 409


async def test_two_admins_revoking_each_other_at_once_leave_one(
    shop: Control, db: asyncpg.Connection
) -> None:
    second = await shop.post(TOKENS, {"scope": "admin"})
    second_id, second_secret = second.body["token"]["id"], second.body["secret"]
    listed = await shop.get(TOKENS)
    first_id = next(t["id"] for t in listed.body["items"] if t["id"] != second_id)
    answers = await asyncio.gather(
        shop.delete(f"{TOKENS}/{first_id}", token=second_secret),
        shop.delete(f"{TOKENS}/{second_id}"),
    )
    statuses = sorted(a.status for a in answers)
    # One wins; the other is refused as the last admin, or finds its own token revoked.
    assert statuses[0] == 200, answers
    assert statuses[1] in (401, 409), answers
    live = await db.fetchval(
        "SELECT count(*) FROM management_tokens WHERE scope = 'admin' AND revoked_at IS NULL"
    )
    assert live == 1
