"""Operator endpoints and the OpenAPI document."""

from __future__ import annotations

import logging
import re

import asyncpg
import orjson
import pytest
from support.control_testkit import Control, control_settings, start_control
from support.probes import assert_probe

from control.app import create_app
from control.state import OPENAPI
from crivline.embedded import PostgresServer


async def test_health_and_readiness(control: Control, db: asyncpg.Connection) -> None:
    health = await control.call("GET", "/healthz", auth=False)
    assert health.body == {"status": "ok", "ready": True, "reasons": []}
    assert_probe(health.body, health.status, endpoint="healthz")
    ready = await control.call("GET", "/readyz", auth=False)
    assert ready.body == {"status": "ready", "ready": True, "reasons": [], "database": "ok"}
    assert_probe(ready.body, ready.status, endpoint="readyz")
    name = await db.fetchval("SELECT name FROM schema_migrations ORDER BY name DESC LIMIT 1")
    await db.execute("DELETE FROM schema_migrations WHERE name = $1", name)
    pending = await control.call("GET", "/readyz", auth=False)
    assert pending.status == 503
    assert_probe(pending.body, pending.status, endpoint="readyz")
    assert pending.body["pendingMigrations"] == [name]
    assert pending.body["reasons"] == ["1 database migration(s) pending: run `crivline migrate`"]


async def test_metrics_are_per_app(database_url: str, db: asyncpg.Connection) -> None:
    first = await start_control(control_settings(database_url), db, "acme")
    second = await start_control(control_settings(database_url), db, "globex")
    try:
        await first.post("/projects", {"key": "shop"})
        text = (await first.call("GET", "/metrics", auth=False)).raw.decode()
        assert 'crivline_control_writes_total{action="project.create"} 1.0' in text
        assert re.search(
            r'crivline_control_http_requests_total\{method="POST",'
            r'route="/api/v1/projects",status="201"\} 1.0', text
        )  # fmt: skip
        other = (await second.call("GET", "/metrics", auth=False)).raw.decode()
        assert "project.create" not in other
        for runtime in ("process_resident_memory_bytes", "python_info", "python_gc_"):
            assert runtime in text, runtime
    finally:
        await first.client.close()
        await second.client.close()


def test_the_document_lists_exactly_the_routes_of_the_app() -> None:
    app = create_app(control_settings("postgresql://unused@127.0.0.1/x"))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    doc = orjson.loads(app[OPENAPI])
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert served == documented
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            params = {p["name"] for p in op.get("parameters", []) if "name" in p}
            assert set(re.findall(r"\{(\w+)\}", path)) <= params, (method, path)
            if path.startswith("/api/v1"):
                assert "401" in op["responses"]
                assert op["security"] == [{"managementToken": [op["x-crivline-scope"]]}]
    ingest = doc["paths"]["/edge/v1/usage"]["post"]
    assert ingest["security"] == [{"edgeCredential": []}]
    assert "401" in ingest["responses"]
    scheme = doc["components"]["securitySchemes"]["edgeCredential"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "crv_edg_" in scheme["description"]
    refs = set(re.findall(r'"#/components/(\w+)/([\w-]+)"', orjson.dumps(doc).decode()))
    for section, name in refs:
        assert name in doc["components"][section], (section, name)


async def test_an_unreachable_database_is_503_and_heals(
    control: Control, postgres: PostgresServer
) -> None:
    await control.project("shop", ())
    postgres.stop()
    try:
        down = await control.get("/projects")
        assert down.status == 503
        assert down.headers["Retry-After"] == "2"
        not_ready = await control.call("GET", "/readyz", auth=False)
        assert not_ready.status == 503
        assert_probe(not_ready.body, not_ready.status, endpoint="readyz")
        assert not_ready.body["reasons"][0].startswith("the database is unreachable (")
        assert (await control.call("GET", "/healthz", auth=False)).status == 200
    finally:
        postgres.start()
    back = await control.get("/projects")
    assert back.status == 200
    assert [p["key"] for p in back.body["items"]] == ["shop"]


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
async def test_operator_endpoints_are_json(control: Control, path: str) -> None:
    answer = await control.call("GET", path, auth=False)
    assert answer.headers["Content-Type"].startswith("application/json")


async def test_every_request_is_one_access_log_line_without_secrets(
    control: Control, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="control.access"):
        await control.post("/projects", {"key": "shop"})
        await control.get("/projects/nowhere?cursor=x", token="crv_mgt_not-a-real-token")
    lines = [r for r in caplog.records if r.name == "control.access"]
    seen = [(r.fields["method"], r.fields["path"], r.fields["status"]) for r in lines]  # type: ignore[attr-defined]
    assert seen == [("POST", "/api/v1/projects", 201), ("GET", "/api/v1/projects/nowhere", 401)]
    assert lines[0].fields["actor"]  # type: ignore[attr-defined]
    text = caplog.text + repr([r.__dict__ for r in lines])
    assert control.token not in text
    assert "crv_mgt_not-a-real-token" not in text
    assert "cursor" not in text
