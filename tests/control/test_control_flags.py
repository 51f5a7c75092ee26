"""Flags: creation, edits with ETag/If-Match, archive and restore."""

from __future__ import annotations

from typing import Any

import asyncpg
from support.control_testkit import Control


async def versions(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT key, version FROM environments")
    return {r["key"]: r["version"] for r in rows}


async def test_create_flag_is_disabled_everywhere_and_bumps_every_environment(
    control: Control, db: asyncpg.Connection
) -> None:
    await control.project()
    before = await versions(db)
    created = await control.flag(key="banner", type="string", name="Banner",
                                 description="Home page banner", metadata={"team": "web"},
                                 variants={"a": "Hi", "b": "Ho"}, defaultVariant="a")  # fmt: skip
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == "/api/v1/projects/shop/flags/banner"
    flag = created.body
    assert (flag["key"], flag["type"], flag["name"], flag["archived"]) == (
        "banner", "string", "Banner", False,
    )  # fmt: skip
    assert flag["metadata"] == {"team": "web"}
    assert set(flag["environments"]) == {"dev", "prod"}
    assert all(
        e == {"state": "DISABLED", "defaultVariant": "a", "targeting": None, "revision": 1}
        for e in flag["environments"].values()
    )
    after = await versions(db)
    assert after == {k: v + 1 for k, v in before.items()}
    flagset = (await control.get("/projects/shop/environments/prod/flagset")).body
    assert flagset["flags"]["banner"] == {
        "state": "DISABLED", "variants": {"a": "Hi", "b": "Ho"}, "defaultVariant": "a",
        "metadata": {"team": "web"},
    }  # fmt: skip


async def test_flag_content_is_validated_with_paths(control: Control) -> None:
    await control.project()
    wrong_type = await control.post("/projects/shop/flags", {
        "key": "limit", "type": "integer", "variants": {"low": 1, "high": 2.5},
    })  # fmt: skip
    assert wrong_type.status == 422
    assert wrong_type.problem_paths() == ["variants.high"]
    no_such_default = await control.post("/projects/shop/flags", {
        "key": "limit", "type": "integer", "variants": {"low": 1}, "defaultVariant": "mid",
    })  # fmt: skip
    assert no_such_default.status == 422
    assert no_such_default.problem_paths() == ["defaultVariant"]
    bad_shape = await control.post("/projects/shop/flags", {
        "key": "limit", "type": "number", "variants": [1, 2], "colour": "red",
    })  # fmt: skip
    assert bad_shape.status == 400
    assert sorted(bad_shape.problem_paths()) == ["colour", "type", "variants"]
    assert (await control.get("/projects/shop/flags/limit")).status == 404


async def test_duplicate_flag_key_is_409_even_when_archived(control: Control) -> None:
    await control.project()
    await control.flag()
    again = await control.post("/projects/shop/flags", {
        "key": "checkout", "type": "string", "variants": {"a": "x"},
    })  # fmt: skip
    assert again.status == 409
    assert (await control.post("/projects/shop/flags/checkout/archive")).status == 200
    assert (await control.post("/projects/shop/flags", {
        "key": "checkout", "type": "string", "variants": {"a": "x"},
    })).status == 409  # fmt: skip


async def test_patch_with_if_match(shop: Control, db: asyncpg.Connection) -> None:
    read = await shop.get("/projects/shop/flags/checkout")
    assert read.headers["ETag"] == '"1"'
    before = await versions(db)
    changed = await shop.patch("/projects/shop/flags/checkout", {"name": "Checkout v2"},
                               headers={"If-Match": read.headers["ETag"]})  # fmt: skip
    assert changed.status == 200
    assert changed.body["name"] == "Checkout v2"
    assert changed.body["revision"] == 2
    assert changed.headers["ETag"] == '"2"'
    # The name is in no flag set: the edge has nothing to learn, no environment moves.
    assert await versions(db) == before

    stale = await shop.patch("/projects/shop/flags/checkout", {"name": "Lost update"},
                             headers={"If-Match": '"1"'})  # fmt: skip
    assert stale.status == 412
    assert stale.problem["currentRevision"] == 2
    assert stale.headers["ETag"] == '"2"'
    assert (await shop.get("/projects/shop/flags/checkout")).body["name"] == "Checkout v2"

    star = await shop.patch("/projects/shop/flags/checkout", {"description": "d"},
                            headers={"If-Match": "*"})  # fmt: skip
    assert star.status == 200
    assert star.body["revision"] == 3
    weak = await shop.patch("/projects/shop/flags/checkout", {"description": "e"},
                            headers={"If-Match": 'W/"3"'})  # fmt: skip
    assert weak.status == 412  # If-Match compares strongly


async def test_patch_that_changes_nothing_writes_nothing(
    shop: Control, db: asyncpg.Connection
) -> None:
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")
    before = await versions(db)
    same = await shop.patch("/projects/shop/flags/checkout",
                            {"variants": {"on": True, "off": False}})  # fmt: skip
    assert same.status == 200
    assert same.body["revision"] == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows
    assert await versions(db) == before


async def test_patch_cannot_remove_a_variant_an_environment_serves(shop: Control) -> None:
    put = await shop.put("/projects/shop/flags/checkout/environments/prod", {
        "state": "ENABLED", "defaultVariant": "on",
        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "off", "on"]},
    })  # fmt: skip
    assert put.status == 200
    answer = await shop.patch("/projects/shop/flags/checkout", {"variants": {"yes": True}})
    assert answer.status == 422
    paths = answer.problem_paths()
    assert "environments.prod.defaultVariant" in paths
    assert "environments.dev.defaultVariant" in paths  # dev still defaults to "off"
    assert any(p.startswith("environments.prod.targeting") for p in paths)
    assert (await shop.get("/projects/shop/flags/checkout")).body["variants"] == {
        "on": True, "off": False,
    }  # fmt: skip
    # The type is fixed at creation; a PATCH naming it is refused as an unknown field.
    typed = await shop.patch("/projects/shop/flags/checkout", {"type": "string"})
    assert typed.status == 400
    assert typed.problem_paths() == ["type"]


async def test_archive_and_restore(shop: Control, db: asyncpg.Connection) -> None:
    before = await versions(db)
    archived = await shop.post("/projects/shop/flags/checkout/archive")
    assert archived.status == 200
    assert archived.body["archived"] is True
    assert archived.headers["ETag"] == '"2"'
    assert await versions(db) == {k: v + 1 for k, v in before.items()}
    for env in ("dev", "prod"):
        flagset = (await shop.get(f"/projects/shop/environments/{env}/flagset")).body
        assert "checkout" not in flagset["flags"]
    assert (await shop.get("/projects/shop/flags")).body["items"] == []
    listed = await shop.get("/projects/shop/flags?archived=true")
    assert [f["key"] for f in listed.body["items"]] == ["checkout"]
    assert len((await shop.get("/projects/shop/flags?archived=all")).body["items"]) == 1
    assert (await shop.get("/projects/shop/flags?archived=maybe")).status == 400

    again = await shop.post("/projects/shop/flags/checkout/archive")
    assert again.status == 200
    assert again.body["revision"] == 2

    stale = await shop.post("/projects/shop/flags/checkout/restore", headers={"If-Match": '"1"'})
    assert stale.status == 412
    restored = await shop.post("/projects/shop/flags/checkout/restore", {},
                               headers={"If-Match": '"2"'})  # fmt: skip
    assert restored.status == 200
    assert restored.body["archived"] is False
    flagset = (await shop.get("/projects/shop/environments/dev/flagset")).body
    assert "checkout" in flagset["flags"]
    with_body = await shop.post("/projects/shop/flags/checkout/archive", {"now": True})
    assert with_body.status == 400


async def test_flag_state_get_and_put(shop: Control, db: asyncpg.Connection) -> None:
    path = "/projects/shop/flags/checkout/environments/prod"
    read = await shop.get(path)
    assert read.status == 200
    assert read.headers["ETag"] == '"1"'
    assert read.body["state"] == "DISABLED"
    assert read.body["defaultVariant"] == "off"
    prod_version = read.body["environmentVersion"]
    targeting = {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]}
    put = await shop.put(path, {"state": "ENABLED", "defaultVariant": "off",
                                "targeting": targeting}, headers={"If-Match": '"1"'})  # fmt: skip
    assert put.status == 200, put
    assert put.headers["ETag"] == '"2"'
    assert (put.body["state"], put.body["revision"]) == ("ENABLED", 2)
    assert put.body["targeting"] == targeting
    assert put.body["updatedBy"].startswith("token:")
    assert put.body["environmentVersion"] == prod_version + 1
    flagset = await shop.get("/projects/shop/environments/prod/flagset")
    assert flagset.body["flags"]["checkout"]["targeting"] == targeting
    assert flagset.headers["Crivline-Version"] == str(prod_version + 1)
    dev = (await shop.get("/projects/shop/environments/dev/flagset")).body
    assert dev["flags"]["checkout"]["state"] == "DISABLED"

    # Fields left out of a PUT become null: it replaces the whole state.
    cleared = await shop.put(path, {"state": "ENABLED"})
    assert cleared.body["defaultVariant"] is None
    assert cleared.body["targeting"] is None
    stale = await shop.put(path, {"state": "DISABLED"}, headers={"If-Match": '"2"'})
    assert stale.status == 412
    assert stale.problem["currentRevision"] == 3


async def test_flag_state_is_validated(shop: Control) -> None:
    path = "/projects/shop/flags/checkout/environments/dev"

    async def refused(body: dict[str, Any], status: int = 422) -> list[str]:
        answer = await shop.put(path, body)
        assert answer.status == status, answer
        return answer.problem_paths()

    assert await refused({"state": "ENABLED", "defaultVariant": "maybe"}) == ["defaultVariant"]
    paths = await refused({"state": "ENABLED", "targeting": {"if": [{"frobnicate": [1]}, "on"]}})
    assert paths
    assert all(p.startswith("targeting.if[0]") for p in paths)
    assert await refused({"state": "ENABLED", "targeting": {"$ref": "nope"}}) == ["targeting.$ref"]
    assert await refused({"state": "ON"}, 400) == ["state"]
    # true and 1 are different JSON: a PUT that only changes one into the other is a change.
    strict = {"state": "ENABLED", "targeting": {"if": [{"===": [{"var": "x"}, True]}, "on", "off"]}}
    assert (await shop.put(path, strict)).body["revision"] == 2
    strict["targeting"]["if"][0]["==="][1] = 1
    changed = await shop.put(path, strict)
    assert changed.body["revision"] == 3
    assert changed.body["targeting"] == strict["targeting"]
    assert await refused({"defaultVariant": "on"}, 400) == ["state"]
    assert (await shop.get(path)).body["revision"] == 3
    assert (await shop.put("/projects/shop/flags/checkout/environments/qa",
                           {"state": "ENABLED"})).status == 404  # fmt: skip
    assert (await shop.put("/projects/shop/flags/nope/environments/dev",
                           {"state": "ENABLED"})).status == 404  # fmt: skip


async def test_float_flags_serve_whole_numbers_as_floats(control: Control) -> None:
    await control.project()
    created = await control.flag(
        key="rate", type="float", variants={"none": 0, "half": 0.5}, defaultVariant="none"
    )
    assert created.status == 201
    served = await control.get("/projects/shop/environments/prod/flagset")
    assert b'"none":0.0' in served.raw
    patched = await control.patch("/projects/shop/flags/rate", {"variants": {"none": 0, "all": 1}})
    assert patched.status == 200
    served = await control.get("/projects/shop/environments/prod/flagset")
    assert b'"all":1.0' in served.raw
    assert b'"none":0.0' in served.raw


async def test_a_whole_number_float_edit_that_changes_nothing_is_a_no_op(
    control: Control,
) -> None:
    await control.project()
    await control.flag(key="rate", type="float", variants={"none": 0.0}, defaultVariant="none")
    again = await control.patch("/projects/shop/flags/rate", {"variants": {"none": 0}})
    assert again.status == 200
    assert again.headers["ETag"] == '"1"'  # 0 is 0.0 for a float flag: no new revision


async def test_only_served_changes_move_the_environments(
    shop: Control, db: asyncpg.Connection
) -> None:
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")
    before = await versions(db)
    described = await shop.patch("/projects/shop/flags/checkout", {"description": "new text"})
    assert described.status == 200
    assert described.body["revision"] == 2
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows + 1  # audited
    assert await versions(db) == before  # committed, not bumped
    tagged = await shop.patch("/projects/shop/flags/checkout", {"metadata": {"team": "web"}})
    assert tagged.status == 200
    assert await versions(db) == {k: v + 1 for k, v in before.items()}  # served: bumped


async def test_if_match_takes_a_bare_revision_and_explains_a_malformed_one(
    shop: Control,
) -> None:
    bare = await shop.patch("/projects/shop/flags/checkout", {"name": "Bare"},
                            headers={"If-Match": "1"})  # fmt: skip
    assert bare.status == 200, bare.body
    assert bare.body["revision"] == 2
    stale = await shop.patch("/projects/shop/flags/checkout", {"name": "Stale"},
                             headers={"If-Match": "1"})  # fmt: skip
    assert stale.status == 412
    malformed = await shop.patch("/projects/shop/flags/checkout", {"name": "Odd"},
                                 headers={"If-Match": "rev-2"})  # fmt: skip
    assert malformed.status == 400
    assert "double quotes" in malformed.problem["detail"], malformed.problem
