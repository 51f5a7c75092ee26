"""Segments: shared targeting rules, served as the flag set's ``$evaluators``."""

from __future__ import annotations

import asyncpg
from support.control_testkit import Control

PRO = {"in": [{"var": "plan"}, ["pro", "enterprise"]]}


async def test_put_creates_then_replaces(shop: Control, db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT sum(version) FROM environments")
    created = await shop.put("/projects/shop/segments/pro-users", {"definition": PRO})
    assert created.status == 201
    assert created.headers["ETag"] == '"1"'
    assert created.body["definition"] == PRO
    # Both environments serve the project's segments: both were bumped.
    assert await db.fetchval("SELECT sum(version) FROM environments") == before + 2

    read = await shop.get("/projects/shop/segments/pro-users")
    assert read.status == 200
    assert read.body == created.body
    flagset = (await shop.get("/projects/shop/environments/dev/flagset")).body
    assert flagset["$evaluators"] == {"pro-users": PRO}

    wider = {"in": [{"var": "plan"}, ["pro", "enterprise", "team"]]}
    replaced = await shop.put(
        "/projects/shop/segments/pro-users", {"definition": wider}, headers={"If-Match": '"1"'}
    )
    assert replaced.status == 200
    assert replaced.body["revision"] == 2
    stale = await shop.put(
        "/projects/shop/segments/pro-users", {"definition": PRO}, headers={"If-Match": '"1"'}
    )
    assert stale.status == 412
    assert stale.problem["currentRevision"] == 2
    # If-Match on a segment that does not exist yet cannot match.
    absent = await shop.put(
        "/projects/shop/segments/beta", {"definition": PRO}, headers={"If-Match": '"1"'}
    )
    assert absent.status == 412
    listed = await shop.get("/projects/shop/segments")
    assert [s["key"] for s in listed.body["items"]] == ["pro-users"]


async def test_segment_definitions_are_validated(shop: Control) -> None:
    unknown_op = await shop.put("/projects/shop/segments/x", {"definition": {"frob": [1]}})
    assert unknown_op.status == 422
    assert unknown_op.problem_paths() == ["definition.frob"]
    cyclic = await shop.put("/projects/shop/segments/x", {"definition": {"$ref": "x"}})
    assert cyclic.status == 422
    not_an_object = await shop.put("/projects/shop/segments/x", {"definition": [1]})
    assert not_an_object.status == 400
    assert not_an_object.problem_paths() == ["definition"]
    assert (await shop.get("/projects/shop/segments/x")).status == 404


async def test_referenced_segment_cannot_be_deleted(shop: Control) -> None:
    assert (await shop.put("/projects/shop/segments/pro", {"definition": PRO})).status == 201
    nested = {"and": [{"$ref": "pro"}, {"==": [{"var": "country"}, "NL"]}]}
    assert (await shop.put("/projects/shop/segments/pro-nl", {"definition": nested})).status == 201
    state = {"state": "ENABLED", "defaultVariant": "off",
             "targeting": {"if": [{"$ref": "pro"}, "on", "off"]}}  # fmt: skip
    assert (await shop.put("/projects/shop/flags/checkout/environments/prod", state)).status == 200

    refused = await shop.delete("/projects/shop/segments/pro")
    assert refused.status == 409
    assert refused.problem["referencedBy"] == ["flag checkout in prod", "segment pro-nl"]

    # An archived flag still counts: it may be restored.
    assert (await shop.post("/projects/shop/flags/checkout/archive")).status == 200
    assert (await shop.delete("/projects/shop/segments/pro")).status == 409

    assert (await shop.delete("/projects/shop/segments/pro-nl")).status == 204
    await shop.put("/projects/shop/flags/checkout/environments/prod", {"state": "DISABLED"})
    stale = await shop.delete("/projects/shop/segments/pro", headers={"If-Match": '"7"'})
    assert stale.status == 412
    deleted = await shop.delete("/projects/shop/segments/pro", headers={"If-Match": '"1"'})
    assert deleted.status == 204
    assert deleted.raw == b""
    assert (await shop.get("/projects/shop/segments/pro")).status == 404
    assert (await shop.delete("/projects/shop/segments/pro")).status == 404
    flagset = (await shop.get("/projects/shop/environments/dev/flagset")).body
    assert "$evaluators" not in flagset


async def test_a_segment_is_per_project(shop: Control) -> None:
    await shop.project("blog", ("dev",))
    assert (await shop.put("/projects/shop/segments/pro", {"definition": PRO})).status == 201
    assert (await shop.get("/projects/blog/segments/pro")).status == 404
    state = {"state": "ENABLED", "targeting": {"if": [{"$ref": "pro"}, "on", "off"]}}
    await shop.flag("blog", "checkout")
    refused = await shop.put("/projects/blog/flags/checkout/environments/dev", state)
    assert refused.status == 422
    assert refused.problem_paths() == ["targeting.if[0].$ref"]
