"""Projects and environments through the real server."""

from __future__ import annotations

import asyncpg
from support.control_testkit import Control


async def test_create_read_and_list_projects(control: Control) -> None:
    created = await control.post("/projects", {"key": "shop", "name": "Shop"})
    assert created.status == 201
    assert created.headers["Location"] == "/api/v1/projects/shop"
    assert created.body["key"] == "shop"
    assert created.body["name"] == "Shop"
    await control.post("/projects", {"key": "blog"})  # the name defaults to the key

    read = await control.get("/projects/shop")
    assert read.status == 200
    assert read.body == created.body
    listed = await control.get("/projects")
    assert [p["key"] for p in listed.body["items"]] == ["blog", "shop"]
    assert listed.body["items"][0]["name"] == "blog"


async def test_duplicate_project_key_is_409(control: Control) -> None:
    assert (await control.post("/projects", {"key": "shop"})).status == 201
    again = await control.post("/projects", {"key": "shop", "name": "Other"})
    assert again.status == 409
    assert "shop" in again.problem["detail"]


async def test_project_body_is_checked_field_by_field(control: Control) -> None:
    answer = await control.post("/projects", {"key": "-bad key", "name": "", "owner": "me"})
    assert answer.status == 400
    assert sorted(answer.problem_paths()) == ["key", "name", "owner"]
    missing = await control.post("/projects", {"name": "No key"})
    assert missing.status == 400
    assert missing.problem_paths() == ["key"]
    trailing_newline = await control.post("/projects", {"key": "shop\n"})
    assert trailing_newline.status == 400
    assert trailing_newline.problem_paths() == ["key"]


async def test_unknown_project_is_404(control: Control) -> None:
    assert (await control.get("/projects/nope")).problem["status"] == 404
    assert (await control.get("/projects/nope/environments")).status == 404
    assert (await control.post("/projects/nope/environments", {"key": "dev"})).status == 404
    assert (await control.get("/projects/not%20a%20key")).status == 404


async def test_new_environment_gets_every_flag_disabled(
    control: Control, db: asyncpg.Connection
) -> None:
    await control.project(environments=("dev",))
    await control.flag(key="a")
    await control.flag(key="b")
    created = await control.post(
        "/projects/shop/environments", {"key": "eu.prod", "name": "EU production"}
    )
    assert created.status == 201
    assert created.headers["Location"] == "/api/v1/projects/shop/environments/eu.prod"
    # Creating it bumped it once: syncd hears of the new environment.
    assert created.body["version"] == 2
    for key in ("a", "b"):
        flag = (await control.get(f"/projects/shop/flags/{key}")).body
        assert flag["environments"]["eu.prod"] == {
            "state": "DISABLED", "defaultVariant": None, "targeting": None, "revision": 1,
        }  # fmt: skip
    flagset = (await control.get("/projects/shop/environments/eu.prod/flagset")).body
    assert flagset["flags"]["a"] == {
        "state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": None,
    }  # fmt: skip
    listed = await control.get("/projects/shop/environments")
    assert [e["key"] for e in listed.body["items"]] == ["dev", "eu.prod"]
    read = await control.get("/projects/shop/environments/eu.prod")
    assert read.status == 200
    assert read.body == created.body
    version = await db.fetchval("SELECT version FROM environments WHERE key = 'eu.prod'")
    assert version == 2


async def test_duplicate_environment_is_409_and_same_key_in_other_project_is_fine(
    control: Control,
) -> None:
    await control.project("shop", ("dev",))
    assert (await control.post("/projects/shop/environments", {"key": "dev"})).status == 409
    await control.project("blog", ("dev",))
    assert (await control.get("/projects/blog/environments/dev")).status == 200
    assert (await control.get("/projects/blog/environments/prod")).status == 404


async def test_rename_and_rebucket_an_environment_and_rename_a_project(
    control: Control, db: asyncpg.Connection
) -> None:
    await control.project("shop", ("dev", "prod"))
    version = await db.fetchval("SELECT version FROM environments WHERE key = 'prod'")
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")

    renamed = await control.patch("/projects/shop/environments/prod", {"name": "Production"})
    assert renamed.status == 200, renamed.body
    assert (renamed.body["name"], renamed.body["version"]) == ("Production", version)
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows + 1

    v2 = await control.patch("/projects/shop/environments/prod", {"fractionalBucketing": "v2"})
    assert v2.status == 200
    assert (v2.body["fractionalBucketing"], v2.body["version"]) == ("v2", version + 1)
    flagset = (await control.get("/projects/shop/environments/prod/flagset")).body
    assert flagset["metadata"]["fractionalBucketing"] == "v2"
    same = await control.patch("/projects/shop/environments/prod", {"fractionalBucketing": "v2"})
    assert same.body["version"] == version + 1  # nothing changed: nothing moved

    bad = await control.patch("/projects/shop/environments/prod", {"key": "live"})
    assert bad.status == 400  # keys never change

    project = await control.patch("/projects/shop", {"name": "Shop (EU)"})
    assert project.status == 200
    assert project.body["name"] == "Shop (EU)"
    assert await db.fetchval("SELECT max(version) FROM environments WHERE key = 'prod'") == (
        version + 1
    )
    actions = await db.fetch("SELECT action FROM audit_log ORDER BY id DESC LIMIT 3")
    assert [r["action"] for r in actions] == [
        "project.update",
        "environment.update",
        "environment.update",
    ]
