"""Helpers for the control API tests: a running app and a client that speaks to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy

from control.app import create_app
from crivline.seed import create_tenant
from crivline.settings import Settings
from crivline.tracing import DISABLED, Tracing
from support.roles import part_url

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


API = "/api/v1"


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: Any  # parsed JSON, or the raw bytes when the answer is not JSON
    raw: bytes

    @property
    def problem(self) -> dict[str, Any]:
        assert self.headers.get("Content-Type", "").startswith("application/problem+json"), self
        assert isinstance(self.body, dict)
        assert self.body["status"] == self.status
        return self.body

    def problem_paths(self) -> list[str]:
        return [e["path"] for e in self.problem.get("errors", [])]


@dataclass
class Control:
    """A running control app and a client that speaks to it as one tenant."""

    app: web.Application
    client: TestClient[web.Request, web.Application]
    token: str
    tenant_id: str

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
        auth: bool = True,
    ) -> Answer:
        sent = dict(headers or {})
        if auth:
            sent.setdefault("Authorization", f"Bearer {token or self.token}")
        async with self.client.request(method, path, json=json, data=data, headers=sent) as resp:
            raw = await resp.read()
            body: Any = raw
            if raw and "json" in resp.headers.get("Content-Type", ""):
                body = await resp.json(content_type=None)
            return Answer(resp.status, resp.headers, body, raw)

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.call("GET", API + path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Answer:
        return await self.call("POST", API + path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Answer:
        return await self.call("PUT", API + path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Answer:
        return await self.call("PATCH", API + path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Answer:
        return await self.call("DELETE", API + path, **kw)

    # -- building blocks -------------------------------------------------------------------

    async def project(
        self, key: str = "shop", environments: tuple[str, ...] = ("dev", "prod")
    ) -> None:
        assert (await self.post("/projects", {"key": key, "name": key.title()})).status == 201
        for env in environments:
            answer = await self.post(f"/projects/{key}/environments", {"key": env})
            assert answer.status == 201, answer

    async def flag(self, project: str = "shop", key: str = "checkout", **fields: Any) -> Answer:
        body = {"key": key, "type": "boolean", "variants": {"on": True, "off": False},
                "defaultVariant": "off", **fields}  # fmt: skip
        answer = await self.post(f"/projects/{project}/flags", body)
        assert answer.status == 201, answer
        return answer


def control_settings(database_url: str, **overrides: Any) -> Settings:
    """Control's settings: the owner's URL for the operator's commands, and control's own
    least-privilege login for the app itself."""
    overrides.setdefault("control_database_url", part_url(database_url, "control"))
    return Settings.from_env({}, database_url=database_url, **overrides)


async def start_control(
    settings: Settings, db: asyncpg.Connection, tenant: str = "acme", tracing: Tracing = DISABLED
) -> Control:
    app = create_app(settings, tracing)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    created = await create_tenant(db, tenant)
    return Control(app, client, created.token, created.id)
