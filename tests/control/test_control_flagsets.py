"""An environment's flag set: read exactly as the edge serves it; flagd documents in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from support.control_testkit import Control

from crivline.snapshot import load_snapshot

SHARED = Path(__file__).resolve().parents[3] / "shared"
FLAGSET = "/projects/shop/environments/{env}/flagset"
IMPORT = "/projects/shop/environments/{env}/import"

DOCUMENT: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "dark-mode": {"state": "ENABLED", "variants": {"on": True, "off": False},
                      "defaultVariant": "off",
                      "targeting": {"if": [{"$ref": "staff"}, "on", "off"]}},
        "greeting": {"state": "ENABLED", "variants": {"formal": "Good day", "casual": "Hi"},
                     "defaultVariant": "casual", "metadata": {"owner": "web"}},
        "page-size": {"state": "DISABLED", "variants": {"small": 10, "large": 50},
                      "defaultVariant": "small"},
        "discount": {"state": "ENABLED", "variants": {"none": 0, "some": 0.15},
                     "defaultVariant": "none"},
        "theme": {"state": "ENABLED", "variants": {"light": {"bg": "#fff"}, "dark": {"bg": "#000"}},
                  "defaultVariant": "light",
                  "targeting": {"fractional": [["light", 50], ["dark", 50]]}},
    },
    "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@shop.example"]}},
    "metadata": {"flagSetId": "shop/prod"},
}  # fmt: skip


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the public conformance data lives beside the repository")
    return path


async def test_flag_set_is_the_snapshot_byte_for_byte(
    shop: Control, db: asyncpg.Connection
) -> None:
    env = str(await db.fetchval("SELECT id FROM environments WHERE key = 'dev'"))
    answer = await shop.get(FLAGSET.format(env="dev"))
    snapshot = await load_snapshot(db, env)
    assert snapshot is not None
    assert answer.raw == snapshot.flag_set_bytes()
    assert answer.headers["ETag"] == f'"{snapshot.version}"'
    assert answer.headers["Crivline-Version"] == str(snapshot.version)

    cached = await shop.get(
        FLAGSET.format(env="dev"), headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert cached.status == 304
    assert cached.raw == b""
    assert cached.headers["ETag"] == answer.headers["ETag"]
    await shop.put("/projects/shop/flags/checkout/environments/dev", {"state": "ENABLED"})
    fresh = await shop.get(
        FLAGSET.format(env="dev"), headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert fresh.status == 200
    assert fresh.headers["Crivline-Version"] == str(snapshot.version + 1)
    assert (await shop.get(FLAGSET.format(env="qa"))).status == 404


async def test_import_loads_a_flagd_document(shop: Control, db: asyncpg.Connection) -> None:
    before = dict(await db.fetch("SELECT key, version FROM environments"))
    answer = await shop.post(IMPORT.format(env="prod"), DOCUMENT)
    assert answer.status == 200, answer
    report = answer.body
    assert report["flags"] == {
        "created": ["dark-mode", "discount", "greeting", "page-size", "theme"],
        "updated": [], "unchanged": [],
    }  # fmt: skip
    assert report["segments"] == {"created": ["staff"], "updated": []}
    after = dict(await db.fetch("SELECT key, version FROM environments"))
    # One transaction, one bump per environment, however many objects it wrote.
    assert after == {k: v + 1 for k, v in before.items()}
    assert report["version"] == after["prod"]

    served = (await shop.get(FLAGSET.format(env="prod"))).body
    for key, flag in DOCUMENT["flags"].items():
        assert served["flags"][key] == flag
    assert served["$evaluators"] == DOCUMENT["$evaluators"]
    # The other environment has the new flags, DISABLED, with the same default.
    dev = (await shop.get(FLAGSET.format(env="dev"))).body
    assert dev["flags"]["greeting"] == {
        "state": "DISABLED", "variants": {"formal": "Good day", "casual": "Hi"},
        "defaultVariant": "casual", "metadata": {"owner": "web"},
    }  # fmt: skip
    types = {f["key"]: f["type"] for f in (await shop.get("/projects/shop/flags")).body["items"]}
    assert types == {"checkout": "boolean", "dark-mode": "boolean", "discount": "float",
                     "greeting": "string", "page-size": "integer", "theme": "object"}  # fmt: skip

    again = await shop.post(IMPORT.format(env="prod"), DOCUMENT)
    assert again.body["flags"]["unchanged"] == sorted(DOCUMENT["flags"])
    assert again.body["version"] == report["version"]
    assert dict(await db.fetch("SELECT key, version FROM environments")) == after


async def test_import_updates_existing_flags_and_restores_archived_ones(
    shop: Control, db: asyncpg.Connection
) -> None:
    await shop.post("/projects/shop/flags/checkout/archive")
    doc = {"flags": {"checkout": {"state": "ENABLED", "variants": {"on": True, "off": False,
                                                                   "maybe": False},
                                  "defaultVariant": "maybe"}}}  # fmt: skip
    before = dict(await db.fetch("SELECT key, version FROM environments"))
    # Variants and archiving belong to the project: prod would change too. Refused,
    # saying what and where, unless the import is asked to apply it.
    refused = await shop.post(IMPORT.format(env="dev"), doc)
    assert refused.status == 409, refused
    assert refused.problem_paths() == ["flags.checkout.variants", "flags.checkout"]
    assert "prod" in refused.problem["detail"]
    assert dict(await db.fetch("SELECT key, version FROM environments")) == before
    answer = await shop.post(IMPORT.format(env="dev") + "?projectChanges=apply", doc)
    assert answer.status == 200, answer
    assert answer.body["flags"]["updated"] == ["checkout"]
    assert answer.body["projectChanges"] == {"flags": ["checkout"], "environments": ["prod"]}
    flag = (await shop.get("/projects/shop/flags/checkout")).body
    assert flag["archived"] is False
    assert flag["variants"] == doc["flags"]["checkout"]["variants"]
    assert flag["environments"]["dev"]["defaultVariant"] == "maybe"
    assert flag["environments"]["prod"]["state"] == "DISABLED"


async def test_import_is_all_or_nothing(shop: Control, db: asyncpg.Connection) -> None:
    audit_rows = await db.fetchval("SELECT count(*) FROM audit_log")
    broken = {"flags": {
        **DOCUMENT["flags"],
        "mixed": {"state": "ENABLED", "variants": {"a": 1, "b": "two"}, "defaultVariant": "a"},
        "checkout": {"state": "ENABLED", "variants": {"on": "yes"}, "defaultVariant": "on"},
    }, "$evaluators": DOCUMENT["$evaluators"]}  # fmt: skip
    answer = await shop.post(IMPORT.format(env="prod"), broken)
    assert answer.status == 422
    paths = answer.problem_paths()
    assert "flags.mixed.variants" in paths
    assert "flags.checkout.variants.on" in paths  # checkout is boolean: "yes" does not fit
    assert await db.fetchval("SELECT count(*) FROM audit_log") == audit_rows
    assert await db.fetchval("SELECT count(*) FROM flags") == 1
    assert await db.fetchval("SELECT count(*) FROM segments") == 0

    # Changing the variants of an existing flag must keep its other environments valid:
    # dev still defaults to "off".
    narrowed = {"flags": {"checkout": {"state": "ENABLED", "variants": {"on": True},
                                       "defaultVariant": "on"}}}  # fmt: skip
    refused = await shop.post(IMPORT.format(env="prod"), narrowed)
    assert refused.status == 422
    assert refused.problem_paths() == ["flags.checkout.environments.dev.defaultVariant"]

    shape = await shop.post(IMPORT.format(env="prod"), {"flags": [], "extra": 1})
    assert shape.status == 400
    assert sorted(shape.problem_paths()) == ["extra", "flags"]


async def test_import_of_the_flagd_testbed_flags(shop: Control) -> None:
    for name in ("testing-flags.json", "disabled-flags.json", "metadata-flags.json"):
        doc = orjson.loads(shared_file("conformance", "flagd-testbed", "flags", name).read_bytes())
        answer = await shop.post(IMPORT.format(env="dev"), doc)
        assert answer.status == 200, (name, answer)
        served = (await shop.get(FLAGSET.format(env="dev"))).body
        for key, flag in doc["flags"].items():
            assert _meaningful(served["flags"][key]) == _meaningful(flag), key


def _meaningful(flag: dict[str, Any]) -> dict[str, Any]:
    """A flag without its empty parts ({} targeting or metadata mean none)."""
    return {k: v for k, v in flag.items() if v != {} and v is not None}


async def test_import_into_one_environment_never_silently_changes_another(
    shop: Control, db: asyncpg.Connection
) -> None:
    greeting = {"state": "ENABLED", "variants": {"a": "Hi", "b": "Yo"}, "defaultVariant": "a",
                "metadata": {"owner": "web"}}  # fmt: skip
    doc = {"flags": {"greeting": greeting}}
    assert (await shop.post(IMPORT.format(env="dev"), doc)).status == 200
    staging_before = (await shop.get(FLAGSET.format(env="dev"))).body
    # The same flag into prod without its metadata: that would remove it in dev too.
    bare = {"flags": {"greeting": {**doc["flags"]["greeting"]}}}
    del bare["flags"]["greeting"]["metadata"]
    refused = await shop.post(IMPORT.format(env="prod"), bare)
    assert refused.status == 409
    assert refused.problem_paths() == ["flags.greeting.metadata"]
    assert "the document has none" in refused.problem["errors"][0]["message"]
    assert (await shop.get(FLAGSET.format(env="dev"))).body == staging_before
    # With the document's metadata it is this environment's change alone.
    same = await shop.post(IMPORT.format(env="prod"), doc)
    assert same.status == 200
    assert same.body["projectChanges"] == {"flags": [], "environments": []}
    assert (await shop.get(FLAGSET.format(env="dev"))).body == staging_before


async def test_import_refuses_flag_set_metadata_it_would_drop(shop: Control) -> None:
    doc = {"flags": {}, "metadata": {"version": "7", "flagSetId": "elsewhere/prod",
                                     "fractionalBucketing": "v3"}}  # fmt: skip
    answer = await shop.post(IMPORT.format(env="prod"), doc)
    assert answer.status == 422
    assert sorted(answer.problem_paths()) == ["metadata.flagSetId", "metadata.version"]
    ours = {"flags": {}, "metadata": {"flagSetId": "shop/prod", "fractionalBucketing": "v3"}}
    assert (await shop.post(IMPORT.format(env="prod"), ours)).status == 200


EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flags.json"


async def test_the_readme_example_document_imports(shop: Control) -> None:
    doc = orjson.loads(EXAMPLE.read_bytes())
    answer = await shop.post(IMPORT.format(env="prod"), doc)
    assert answer.status == 200, answer
    assert answer.body["flags"]["created"] == sorted(doc["flags"])
