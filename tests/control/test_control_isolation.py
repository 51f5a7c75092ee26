"""Tenant isolation: another tenant's objects answer 404, exactly like missing ones, and
nothing of theirs changes, whatever route is called."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest
from support.control_testkit import (
    BODIES,
    TENANT_ROWS,
    Control,
    control_settings,
    start_control,
)

from control.routes import operations


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
    b_token = (await b.get("/tokens")).body["items"][0]["id"]
    targets = [
        # Everything B-only, addressed inside a project A does not have.
        {"project": "secret", "environment": "hidden-env", "flag": "hidden-flag",
         "segment": "b-seg", "key_id": b_key, "token_id": b_token},
        # B-only objects inside a project both have (shop).
        {"project": "shop", "environment": "b-env", "flag": "b-flag", "segment": "b-seg",
         "key_id": b_key, "token_id": b_token},
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
        if op.method == "GET" or "key_id" in names or "token_id" in names:
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
