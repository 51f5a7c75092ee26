"""Tenant isolation: another tenant's objects answer 404, exactly like missing ones, and
nothing of theirs changes, whatever route is called."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from control_testkit import Control, control_settings, start_control

from control.routes import operations

# A valid body for each operation that takes one: the isolation must hold for requests
# that would succeed on the caller's own objects.
BODIES: dict[str, Any] = {
    "createProject": {"key": "fresh"},
    "createEnvironment": {"key": "fresh"},
    "createFlag": {"key": "fresh", "type": "boolean", "variants": {"on": True}},
    "updateFlag": {"name": "Mine now"},
    "updateProject": {"name": "Mine now"},
    "updateEnvironment": {"name": "Mine now"},
    "putFlagState": {"state": "ENABLED", "defaultVariant": "on"},
    "putSegment": {"definition": {"==": [1, 1]}},
    "createApiKey": {"kind": "server"},
    "importFlagSet": {"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}}}},
}

TENANT_ROWS = """
SELECT (SELECT json_agg(p ORDER BY p.id) FROM projects p WHERE tenant_id = $1) AS projects,
       (SELECT json_agg(e ORDER BY e.id) FROM environments e WHERE tenant_id = $1) AS envs,
       (SELECT json_agg(f ORDER BY f.id) FROM flags f WHERE tenant_id = $1) AS flags,
       (SELECT json_agg(fe ORDER BY fe.flag_id, fe.environment_id)
          FROM flag_environments fe WHERE tenant_id = $1) AS states,
       (SELECT json_agg(s ORDER BY s.id) FROM segments s WHERE tenant_id = $1) AS segments,
       (SELECT json_agg(k ORDER BY k.id) FROM api_keys k WHERE tenant_id = $1) AS keys,
       (SELECT count(*) FROM audit_log WHERE tenant_id = $1) AS audit_rows
"""


async def build(tenant: Control) -> None:
    """The same names in both tenants: project shop, dev/prod, flag checkout, segment pro."""
    await tenant.project("shop", ("dev", "prod"))
    await tenant.flag()
    await tenant.put("/projects/shop/segments/pro", {"definition": {"==": [1, 1]}})
    await tenant.post("/projects/shop/environments/dev/keys", {"kind": "server"})


@pytest.fixture
async def tenants(
    database_url: str, db: asyncpg.Connection
) -> AsyncIterator[tuple[Control, Control]]:
    settings = control_settings(database_url)
    a = await start_control(settings, db, "acme")
    b = await start_control(settings, db, "globex")
    try:
        await build(a)
        await build(b)
        # Objects only B has: A addressing them must find nothing.
        await b.project("secret", ("hidden-env",))
        await b.flag("secret", "hidden-flag")
        await b.post("/projects/shop/environments", {"key": "b-env"})
        await b.flag("shop", "b-flag")
        await b.put("/projects/shop/segments/b-seg", {"definition": {"==": [2, 2]}})
        yield a, b
    finally:
        await a.client.close()
        await b.client.close()


async def test_every_route_on_another_tenants_objects_is_404(
    tenants: tuple[Control, Control], db: asyncpg.Connection
) -> None:
    a, b = tenants
    b_key = (await b.get("/projects/shop/environments/dev/keys")).body["items"][0]["id"]
    targets = [
        # Everything B-only, addressed inside a project A does not have.
        {"project": "secret", "environment": "hidden-env", "flag": "hidden-flag",
         "segment": "b-seg", "key_id": b_key},
        # B-only objects inside a project both have (shop).
        {"project": "shop", "environment": "b-env", "flag": "b-flag", "segment": "b-seg",
         "key_id": b_key},
    ]  # fmt: skip
    before = await db.fetchrow(TENANT_ROWS, b.tenant_id)
    checked = 0
    for op in operations():
        names = re.findall(r"\{(\w+)\}", op.path)
        if not names:
            continue
        for target in targets:
            if target["project"] == "shop" and (
                set(names) <= {"project"} or op.operation_id == "putSegment"
            ):
                continue  # shop is A's own project too: these create A's own objects
            if target["project"] == "shop" and names == ["project", "flag", "environment"]:
                for flag, env in (("b-flag", "dev"), ("checkout", "b-env")):
                    path = op.path.format(project="shop", flag=flag, environment=env)
                    answer = await a.call(op.method, path, BODIES.get(op.operation_id))
                    assert answer.status == 404, (op.operation_id, path, answer)
                continue
            path = op.path.format(**{n: target[n] for n in names})
            answer = await a.call(op.method, path, BODIES.get(op.operation_id))
            assert answer.status == 404, (op.operation_id, path, answer)
            assert answer.problem["title"] == "Not Found"
            checked += 1
    assert checked >= 20
    assert (await a.get("/audit?project=secret")).status == 404
    assert await db.fetchrow(TENANT_ROWS, b.tenant_id) == before


async def test_same_names_reach_only_your_own_objects(
    tenants: tuple[Control, Control], db: asyncpg.Connection
) -> None:
    a, b = tenants
    before = await db.fetchrow(TENANT_ROWS, b.tenant_id)
    b_flagset = (await b.get("/projects/shop/environments/dev/flagset")).raw
    assert [p["key"] for p in (await a.get("/projects")).body["items"]] == ["shop"]
    a_flag = (await a.get("/projects/shop/flags/checkout")).body
    b_flag = (await b.get("/projects/shop/flags/checkout")).body
    assert a_flag["id"] != b_flag["id"]

    for op in operations():
        names = re.findall(r"\{(\w+)\}", op.path)
        if op.method == "GET" or "key_id" in names:
            continue
        values = {"project": "shop", "environment": "dev", "flag": "checkout", "segment": "pro"}
        path = op.path.format(**{n: values[n] for n in names})
        answer = await a.call(op.method, path, BODIES.get(op.operation_id))
        assert answer.status < 500, (op.operation_id, answer)
    audit = (await a.get("/audit?limit=500")).body["items"]
    assert {e["actor"] for e in audit} <= {"system:bootstrap", audit[0]["actor"]}
    assert b_flag["id"] not in str(audit)
    assert await db.fetchrow(TENANT_ROWS, b.tenant_id) == before
    assert (await b.get("/projects/shop/environments/dev/flagset")).raw == b_flagset
