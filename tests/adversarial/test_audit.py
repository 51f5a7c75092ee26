"""The audit log: no write path can skip its audit row, and the database refuses to let
an audit row change.

- Every write route of the control API (taken from its own route declarations, so a new
  one fails this test until it is covered) is driven once: each committed change has
  audit rows — actor, action, entity, and the object before and after — and a write
  that changes nothing writes no row.
- With audit rows made impossible to insert, every write route fails and commits
  nothing: the change and its audit row are one transaction, there is no path around it.
- UPDATE, DELETE and TRUNCATE of ``audit_log`` are refused by the database itself.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from world import World

from control.routes import operations

# The management API's writes. The two other writes control takes are covered where they
# are tested: the Stripe webhook (audited, all or nothing: test_control_plans.py) and
# usage ingestion (metering data, counted once per batch, not audited:
# test_control_usage_ingest.py).
WRITE_ROUTES = {
    op.operation_id for op in operations() if op.method != "GET" and op.path.startswith("/api/v1/")
}

DATA = """
SELECT (SELECT json_agg(p ORDER BY p.id) FROM projects p WHERE tenant_id = $1) AS projects,
       (SELECT json_agg(e ORDER BY e.id) FROM environments e WHERE tenant_id = $1) AS envs,
       (SELECT json_agg(f ORDER BY f.id) FROM flags f WHERE tenant_id = $1) AS flags,
       (SELECT json_agg(fe ORDER BY fe.flag_id, fe.environment_id)
          FROM flag_environments fe WHERE tenant_id = $1) AS states,
       (SELECT json_agg(s ORDER BY s.id) FROM segments s WHERE tenant_id = $1) AS segments,
       (SELECT json_agg(k ORDER BY k.id) FROM api_keys k WHERE tenant_id = $1) AS keys,
       (SELECT json_agg(m ORDER BY m.id) FROM management_tokens m WHERE tenant_id = $1)
           AS tokens
"""
AUDIT = """
SELECT id, tenant_id::text, project_id::text, actor, action, entity_type, entity_id::text,
       entity_key, before, after
  FROM audit_log WHERE id > $1 ORDER BY id
"""

P = "/projects/audited"
FAILED = "the server failed to handle this request; it has been logged"
NO_ID = "00000000-0000-4000-8000-000000000000"


def writes(key_id: str, token_id: str = NO_ID) -> list[tuple[str, str, str, Any]]:
    """(route, method, path, body): one write per route, each changing something."""
    return [
        ("createProject", "POST", "/projects", {"key": "audited"}),
        ("createEnvironment", "POST", f"{P}/environments", {"key": "qa"}),
        ("createFlag", "POST", f"{P}/flags",
         {"key": "f", "type": "string", "variants": {"a": "x", "b": "y"}}),
        ("updateFlag", "PATCH", f"{P}/flags/f", {"name": "F", "description": "audited"}),
        ("putFlagState", "PUT", f"{P}/flags/f/environments/qa",
         {"state": "ENABLED", "defaultVariant": "a"}),
        ("putSegment", "PUT", f"{P}/segments/s", {"definition": {"==": [{"var": "x"}, 1]}}),
        ("archiveFlag", "POST", f"{P}/flags/f/archive", None),
        ("restoreFlag", "POST", f"{P}/flags/f/restore", None),
        ("deleteSegment", "DELETE", f"{P}/segments/s", None),
        ("createApiKey", "POST", f"{P}/environments/qa/keys", {"kind": "server"}),
        ("revokeApiKey", "DELETE", f"{P}/environments/qa/keys/{key_id}", None),
        ("importFlagSet", "POST", f"{P}/environments/qa/import",
         {"flags": {"g": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on",
                          "targeting": {"if": [{"$ref": "e"}, "on", None]}}},
          "$evaluators": {"e": {"==": [1, 1]}}}),
        ("updateProject", "PATCH", P, {"name": "Audited"}),
        ("updateEnvironment", "PATCH", f"{P}/environments/qa",
         {"name": "QA", "fractionalBucketing": "v2"}),
        ("createManagementToken", "POST", "/tokens", {"scope": "read", "label": "audited"}),
        ("revokeManagementToken", "DELETE", f"/tokens/{token_id}", None),
        ("deleteEnvironment", "DELETE", f"{P}/environments/qa", None),
        ("deleteProject", "DELETE", P, None),
    ]  # fmt: skip


async def last_audit_id(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM audit_log"))


async def test_every_committed_change_has_its_audit_rows(world: World) -> None:
    db, acme = world.central.db, world.acme
    covered: set[str] = set()
    key_id = token_id = NO_ID
    # The second round repeats what the first did (which changes nothing, so audits
    # nothing), revokes what the first made, and only then deletes the environment and the
    # project (which would have taken the first round's key with them).
    for repeat in range(2):
        for route, method, path, body in writes(key_id, token_id):
            if repeat == 0 and route in ("deleteEnvironment", "deleteProject"):
                continue
            before = await db.fetchrow(DATA, acme.tenant_id)
            mark = await last_audit_id(db)
            status, answer, _ = await world.api(acme, method, path, body)
            after = await db.fetchrow(DATA, acme.tenant_id)
            rows = await db.fetch(AUDIT, mark)
            if route == "createApiKey" and status == 201:
                key_id = answer["apiKey"]["id"]
            if route == "createManagementToken" and status == 201:
                token_id = answer["token"]["id"]
            if after == before:
                assert rows == [], (route, status, [r["action"] for r in rows])
                continue
            assert status in (200, 201, 204), (route, status, answer)
            covered.add(route)
            assert rows, f"{route} committed a change without an audit row"
            for row in rows:
                assert row["tenant_id"] == acme.tenant_id
                assert row["actor"].startswith("token:"), row
                assert row["action"].split(".")[0] == row["entity_type"], row
                assert row["entity_id"] or row["entity_key"], row  # (a key's label may be "")
                assert row["before"] is not None or row["after"] is not None, row
                assert row["before"] != row["after"], row
                if row["action"].endswith(".create"):
                    assert row["before"] is None, row
                if row["action"].endswith(".delete"):
                    assert row["after"] is None, row
            for secret in acme.keys.values():
                assert secret not in str([dict(r) for r in rows])
            if route == "createApiKey":
                assert answer["key"] not in str([dict(r) for r in rows])
            if route == "createManagementToken":
                assert answer["secret"] not in str([dict(r) for r in rows])
    assert covered == WRITE_ROUTES, WRITE_ROUTES - covered


async def test_no_write_commits_when_its_audit_row_cannot_be_written(world: World) -> None:
    db, acme = world.central.db, world.acme
    # Objects for every route to act on, made while auditing works.
    for _route, method, path, body in writes("00000000-0000-4000-8000-000000000000")[:10]:
        await world.ok(acme, method, path, body)
    await world.ok(acme, "PUT", f"{P}/segments/s", {"definition": {"==": [1, 1]}})
    await world.ok(acme, "POST", f"{P}/flags",
                   {"key": "old", "type": "boolean", "variants": {"on": True}})  # fmt: skip
    await world.ok(acme, "POST", f"{P}/flags/old/archive")
    key = await world.ok(acme, "POST", f"{P}/environments/qa/keys", {"kind": "client"})
    token = await world.ok(acme, "POST", "/tokens", {"scope": "read"})
    attempts = [
        ("createProject", "POST", "/projects", {"key": "blocked"}),
        ("createEnvironment", "POST", f"{P}/environments", {"key": "blocked"}),
        ("createFlag", "POST", f"{P}/flags", {"key": "blocked", "type": "boolean",
                                               "variants": {"on": True}}),
        ("updateFlag", "PATCH", f"{P}/flags/f", {"name": "blocked"}),
        ("putFlagState", "PUT", f"{P}/flags/f/environments/qa",
         {"state": "DISABLED", "defaultVariant": "b"}),
        ("putSegment", "PUT", f"{P}/segments/blocked", {"definition": {"==": [1, 1]}}),
        ("archiveFlag", "POST", f"{P}/flags/f/archive", None),
        ("restoreFlag", "POST", f"{P}/flags/old/restore", None),
        ("deleteSegment", "DELETE", f"{P}/segments/s", None),
        ("createApiKey", "POST", f"{P}/environments/qa/keys", {"kind": "server"}),
        ("revokeApiKey", "DELETE", f"{P}/environments/qa/keys/{key['apiKey']['id']}", None),
        ("importFlagSet", "POST", f"{P}/environments/qa/import",
         {"flags": {"blocked": {"state": "ENABLED", "variants": {"on": True}}}}),
        ("updateProject", "PATCH", P, {"name": "blocked"}),
        ("updateEnvironment", "PATCH", f"{P}/environments/qa", {"name": "blocked"}),
        ("createManagementToken", "POST", "/tokens", {"scope": "read"}),
        ("revokeManagementToken", "DELETE", f"/tokens/{token['token']['id']}", None),
        ("deleteEnvironment", "DELETE", f"{P}/environments/qa", None),
        ("deleteProject", "DELETE", P, None),
    ]  # fmt: skip
    assert {a[0] for a in attempts} == WRITE_ROUTES
    versions = "SELECT json_agg(version ORDER BY id) FROM environments"
    await db.execute(
        "ALTER TABLE audit_log ADD CONSTRAINT adversarial_no_audit CHECK (false) NOT VALID"
    )
    try:
        for route, method, path, body in attempts:
            before = (await db.fetchrow(DATA, acme.tenant_id), await db.fetchval(versions))
            mark = await last_audit_id(db)
            status, answer, _ = await world.api(acme, method, path, body)
            assert status == 500, (route, status, answer)
            assert answer["detail"] == FAILED
            after = (await db.fetchrow(DATA, acme.tenant_id), await db.fetchval(versions))
            assert after == before, f"{route} committed without its audit row"
            assert await last_audit_id(db) == mark
    finally:
        await db.execute("ALTER TABLE audit_log DROP CONSTRAINT adversarial_no_audit")


async def test_the_database_refuses_to_change_audit_rows(world: World) -> None:
    db = world.central.db
    before = await db.fetch("SELECT * FROM audit_log ORDER BY id")
    assert len(before) > 10
    for statement in (
        "UPDATE audit_log SET actor = 'someone else'",
        "UPDATE audit_log SET after = NULL WHERE id = (SELECT max(id) FROM audit_log)",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)",
        "TRUNCATE audit_log",
        "TRUNCATE audit_log CASCADE",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="audit_log is append-only"):
            await db.execute(statement)
    assert await db.fetch("SELECT * FROM audit_log ORDER BY id") == before
