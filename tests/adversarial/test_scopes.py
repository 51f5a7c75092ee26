"""Tenant A, with every scope of token, aiming at tenant B's objects by their ids.

On the real pipeline (``world``): acme's tokens send paths and bodies naming globex's
API key ids, management token ids, environment and project ids. Each is refused the
way an object that does not exist is refused (404, or 400 for a field the body does
not have), globex's secrets keep working, and nothing of globex's changes. A token
below an operation's scope is refused with 403 before anything is read.
"""

from __future__ import annotations

import pytest
from world import World

ROWS = """
SELECT (SELECT count(*) FROM audit_log WHERE tenant_id = $1) AS audit,
       (SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL) AS keys,
       (SELECT count(*) FROM management_tokens WHERE tenant_id = $1
           AND revoked_at IS NULL) AS tokens,
       (SELECT max(version) FROM environments WHERE tenant_id = $1) AS version
"""


@pytest.fixture
async def acme_tokens(world: World) -> dict[str, str]:
    """An acme token of each scope."""
    out = {"admin": world.acme.token}
    for scope in ("read", "write"):
        issued = await world.ok(world.acme, "POST", "/tokens", {"scope": scope})
        out[scope] = issued["secret"]
    return out


async def test_crafted_ids_of_another_tenant_reach_nothing(
    world: World, acme_tokens: dict[str, str]
) -> None:
    db = world.central.db
    globex = world.globex
    before = await db.fetchrow(ROWS, globex.tenant_id)
    b_key = globex.key_ids[("dev", "server")]
    b_token = await db.fetchval(
        "SELECT id::text FROM management_tokens WHERE tenant_id = $1", globex.tenant_id
    )
    b_env, b_project = (
        globex.env_ids["dev"],
        await db.fetchval("SELECT id::text FROM projects WHERE tenant_id = $1", globex.tenant_id),
    )
    attempts = [
        ("DELETE", f"/projects/shop/environments/dev/keys/{b_key}", None),
        ("DELETE", f"/projects/shop/environments/prod/keys/{b_key}", None),
        ("DELETE", f"/tokens/{b_token}", None),
        ("GET", f"/projects/{b_project}", None),
        ("GET", f"/projects/shop/environments/{b_env}/flagset", None),
        ("POST", f"/projects/{b_project}/environments", {"key": "planted"}),
        ("PUT", f"/projects/shop/flags/checkout/environments/{b_env}", {"state": "ENABLED"}),
    ]
    for method, path, body in attempts:
        status, answer, _ = await world.api_with(acme_tokens["admin"], method, path, body)
        assert status == 404, (method, path, status, answer)
    # Bodies naming the other tenant: fields no body has are refused, never obeyed.
    for path, body in (
        ("/projects", {"key": "planted", "tenantId": globex.tenant_id}),
        ("/tokens", {"scope": "admin", "tenant": globex.tenant_id}),
        (
            "/projects/shop/environments/dev/keys",
            {"kind": "server", "environmentId": b_env},
        ),
    ):
        status, answer, _ = await world.api_with(acme_tokens["admin"], "POST", path, body)
        assert status == 400, (path, status, answer)
    assert await db.fetchrow(ROWS, globex.tenant_id) == before
    # globex's secrets still work everywhere.
    assert (await world.api(globex, "GET", "/projects"))[0] == 200
    async with world.proxy.session.get(
        world.proxy.url + "/sdk/v1/flags", headers={"Authorization": f"Bearer {globex.key()}"}
    ) as response:
        assert response.status == 200


async def test_each_scope_is_held_to_its_operations(
    world: World, acme_tokens: dict[str, str]
) -> None:
    db = world.central.db
    before = await db.fetchrow(ROWS, world.acme.tenant_id)
    key_id = world.acme.key_ids[("dev", "server")]
    refused = [
        ("read", "POST", "/projects", {"key": "x"}, "write"),
        (
            "read",
            "PUT",
            "/projects/shop/flags/checkout/environments/dev",
            {"state": "DISABLED"},
            "write",
        ),
        ("read", "POST", "/tokens", {"scope": "admin"}, "admin"),
        ("write", "POST", "/tokens", {"scope": "admin"}, "admin"),
        ("write", "DELETE", f"/projects/shop/environments/dev/keys/{key_id}", None, "admin"),
        ("write", "POST", "/projects/shop/environments/dev/keys", {"kind": "server"}, "admin"),
    ]
    for scope, method, path, body, needed in refused:
        status, answer, headers = await world.api_with(acme_tokens[scope], method, path, body)
        assert status == 403, (scope, method, path, status, answer)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert answer["requiredScope"] == needed
    assert await db.fetchrow(ROWS, world.acme.tenant_id) == before
    # A management token of any scope is no API key on the proxy.
    for secret in acme_tokens.values():
        async with world.proxy.session.get(
            world.proxy.url + "/sdk/v1/flags", headers={"Authorization": f"Bearer {secret}"}
        ) as response:
            assert response.status == 401
