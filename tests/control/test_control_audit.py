"""The audit trail: one entry per change, with the object before and after."""

from __future__ import annotations

from typing import Any

import asyncpg
from support.control_testkit import Control


async def entries(control: Control, **query: Any) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    answer = await control.get(f"/audit?{params}")
    assert answer.status == 200, answer
    items: list[dict[str, Any]] = answer.body["items"]
    return items


async def test_every_write_is_audited_with_before_and_after(
    control: Control, db: asyncpg.Connection
) -> None:
    await control.project("shop", ("dev",))
    await control.flag()
    await control.patch("/projects/shop/flags/checkout", {"name": "Checkout"})
    await control.put("/projects/shop/flags/checkout/environments/dev",
                      {"state": "ENABLED", "defaultVariant": "on"})  # fmt: skip
    await control.put("/projects/shop/segments/pro", {"definition": {"==": [1, 1]}})
    await control.put("/projects/shop/segments/pro", {"definition": {"==": [2, 2]}})
    await control.delete("/projects/shop/segments/pro")
    await control.post("/projects/shop/flags/checkout/archive")
    await control.post("/projects/shop/flags/checkout/restore")
    key = (await control.post("/projects/shop/environments/dev/keys", {"kind": "server"})).body
    await control.delete(f"/projects/shop/environments/dev/keys/{key['apiKey']['id']}")

    log = list(reversed(await entries(control, project="shop", limit=100)))
    assert [e["action"] for e in log] == [
        "project.create", "environment.create", "flag.create", "flag.update",
        "flag_environment.update", "segment.create", "segment.update", "segment.delete",
        "flag.archive", "flag.restore", "api_key.create", "api_key.revoke",
    ]  # fmt: skip
    by_action = {e["action"]: e for e in log}
    assert all(e["actor"].startswith("token:") for e in log)
    assert by_action["project.create"]["before"] is None
    assert by_action["project.create"]["after"]["key"] == "shop"
    update = by_action["flag.update"]
    assert (update["before"]["name"], update["after"]["name"]) == ("", "Checkout")
    assert (update["before"]["revision"], update["after"]["revision"]) == (1, 2)
    state = by_action["flag_environment.update"]
    assert state["entityKey"] == "checkout/dev"
    assert (state["before"]["state"], state["after"]["state"]) == ("DISABLED", "ENABLED")
    assert state["after"]["defaultVariant"] == "on"
    segment = by_action["segment.update"]
    assert segment["before"]["definition"] == {"==": [1, 1]}
    assert segment["after"]["definition"] == {"==": [2, 2]}
    assert by_action["segment.delete"]["after"] is None
    assert by_action["flag.archive"]["after"]["archived"] is True
    assert by_action["flag.restore"]["before"]["archived"] is True
    revoke = by_action["api_key.revoke"]
    assert revoke["before"]["revokedAt"] is None
    assert revoke["after"]["revokedAt"] is not None
    created_key = by_action["api_key.create"]["after"]
    assert created_key["displayPrefix"] == key["apiKey"]["displayPrefix"]
    assert key["key"] not in str(log)  # the secret is never in the log
    # The rows themselves: exactly one per change, none of them editable.
    total = await db.fetchval("SELECT count(*) FROM audit_log WHERE project_id IS NOT NULL")
    assert total == len(log)


async def test_pages_newest_first_by_cursor(control: Control) -> None:
    await control.project("shop", ("dev",))
    for i in range(7):
        await control.flag(key=f"flag-{i}")
    everything = await entries(control, limit=500)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = "/audit?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await control.get(query)
        assert page.status == 200
        assert len(page.body["items"]) <= 3
        seen += page.body["items"]
        cursor = page.body["nextCursor"]
        if cursor is None:
            break
    assert seen == everything
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), key=int, reverse=True)
    assert [e["entityKey"] for e in seen[:2]] == ["flag-6", "flag-5"]


async def test_audit_filters_and_bad_parameters(control: Control) -> None:
    await control.project("shop", ("dev",))
    await control.project("blog", ("dev",))
    blog = await entries(control, project="blog")
    assert {e["entityKey"] for e in blog} == {"blog", "dev"}
    tenant_wide = await entries(control)
    assert {"tenant.create", "management_token.create"} <= {e["action"] for e in tenant_wide}
    for query in ("limit=0", "limit=501", "limit=ten", "cursor=bm9wZQ", "cursor=%%%"):
        answer = await control.get(f"/audit?{query}")
        assert answer.status == 400, query
    assert (await control.get("/audit?project=nope")).status == 404
    assert (await control.get("/audit?project=no%20pe")).status == 404
