"""Every refusal is an RFC 9457 problem: authentication, body shape and size, routing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.control_testkit import Control, control_settings, start_control

from control.app import create_app


async def test_missing_token_is_401_with_a_bearer_challenge(control: Control) -> None:
    answer = await control.get("/projects", auth=False)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="crivline"'
    assert answer.problem["title"] == "Unauthorized"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer crv_mgt_not-a-real-token"]
)
async def test_a_token_that_is_not_a_management_token_is_401(control: Control, header: str) -> None:
    refused = await control.get("/projects", headers={"Authorization": header}, auth=False)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


async def test_api_keys_and_revoked_tokens_are_not_management_tokens(
    shop: Control, db: asyncpg.Connection
) -> None:
    server_key = (await shop.post("/projects/shop/environments/dev/keys", {"kind": "server"})).body
    assert (await shop.get("/projects", token=server_key["key"])).status == 401
    await db.execute("UPDATE management_tokens SET revoked_at = now()")
    answer = await shop.get("/projects")
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
async def test_operator_endpoints_need_no_token(control: Control, path: str) -> None:
    assert (await control.call("GET", path, auth=False)).status == 200


async def test_bodies_must_be_json_objects(control: Control) -> None:
    not_json = await control.post(
        "/projects", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status == 400
    assert "not valid JSON" in not_json.problem["detail"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong_type = await control.post("/projects", data=b"key=shop", headers=form)
    assert wrong_type.status == 415
    untyped = await control.post("/projects", data=b'{"key": "shop"}', headers={"Content-Type": ""})
    assert untyped.status == 415
    array = await control.post("/projects", [{"key": "shop"}])
    assert array.status == 400
    empty = await control.post("/projects", data=b"", headers={"Content-Type": "application/json"})
    assert empty.status == 400
    nul = await control.post("/projects", {"key": "shop", "name": "a\u0000b"})
    assert nul.status == 422
    assert nul.problem_paths() == ["name"]
    assert (await control.get("/projects")).body["items"] == []


@pytest.fixture
async def small_control(database_url: str, db: asyncpg.Connection) -> AsyncIterator[Control]:
    running = await start_control(control_settings(database_url, max_body_bytes=1024), db)
    yield running
    await running.client.close()


async def test_bodies_over_the_limit_are_413(small_control: Control) -> None:
    big = {"key": "shop", "name": "x" * 2000}
    assert (await small_control.post("/projects", big)).status == 413

    async def chunks() -> object:  # no Content-Length: the limit holds while reading
        for _ in range(4):
            yield b" " * 512
        yield b'{"key": "shop"}'

    streamed = await small_control.post(
        "/projects",
        data=chunks(),
        headers={"Content-Type": "application/json"},  # type: ignore[arg-type]
    )
    assert streamed.status == 413
    assert streamed.problem["title"] == "Payload Too Large"
    assert (await small_control.post("/projects", {"key": "shop"})).status == 201


async def test_unknown_routes_and_methods_are_problems(control: Control) -> None:
    missing = await control.get("/nothing-here")
    assert missing.status == 404
    assert missing.problem["title"] == "Not Found"
    wrong_method = await control.call("PUT", "/api/v1/projects", {"key": "x"})
    assert wrong_method.status == 405
    assert set(wrong_method.headers["Allow"].split(",")) == {"GET", "POST"}
    assert wrong_method.problem["status"] == 405


async def test_a_bug_is_a_500_problem_without_details(
    database_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = create_app(control_settings(database_url))
    app.router.add_get("/broken", broken)
    async with (
        TestClient(TestServer(app, host="127.0.0.1")) as client,
        client.get("/broken") as resp,
    ):
        body = await resp.json(content_type=None)
        assert resp.status == 500
        assert resp.content_type == "application/problem+json"
    assert body["title"] == "Internal Server Error"
    assert "secret internals" not in str(body)
    assert any("unhandled error" in r.getMessage() and r.exc_info for r in caplog.records)
