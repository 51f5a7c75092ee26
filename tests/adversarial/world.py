"""Two tenants on the real pipeline, with the same names for different things.

:func:`build_world` drives the control API of ``central`` (edgekit) as tenant ``acme``
(its token) and tenant ``globex`` (a second tenant made with ``create_tenant``): each
gets project ``shop`` with environments ``dev`` and ``prod``, flags ``checkout``
(string, whose values name tenant and environment) and ``hostile`` (a
catastrophic-backtracking pattern under ``regex_match``), a segment ``pro``, and one
server and one client key per environment. Each environment's targeting carries a
marker (``acme-dev-marker`` …) so any answer can be searched for what it must not hold.
The proxy is then started and waits until it holds every environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from support.edgekit import TEST_OPTIONS, Central, RunningProxy, StartProxy

from crivline.seed import create_tenant

TENANTS = ("acme", "globex")
ENVS = ("dev", "prod")
KINDS = ("server", "client")
HOSTILE_PATTERN = "(a+)+$"
OPERATOR_TOKEN = "operator-token-for-the-adversarial-suite"
# Short waits: a refetch naming a version the proxy lacks answers 503 after this long.
OPTIONS = TEST_OPTIONS.with_(refetch_wait_seconds=0.1)


def marker(tenant: str, env: str) -> str:
    return f"{tenant}-{env}-marker"


@dataclass
class Tenant:
    name: str
    token: str
    tenant_id: str
    env_ids: dict[str, str] = field(default_factory=dict)  # env key -> id
    keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (env, kind) -> secret
    key_ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def key(self, env: str = "dev", kind: str = "server") -> str:
        return self.keys[(env, kind)]


@dataclass
class World:
    central: Central
    proxy: RunningProxy
    tenants: dict[str, Tenant]
    control_port: int
    proxy_port: int

    @property
    def acme(self) -> Tenant:
        return self.tenants["acme"]

    @property
    def globex(self) -> Tenant:
        return self.tenants["globex"]

    async def api(
        self,
        tenant: Tenant,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        return await self.api_with(tenant.token, method, path, body, headers=headers)

    async def api_with(
        self,
        secret: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        """A control API call with any bearer secret."""
        sent = {"Authorization": f"Bearer {secret}", **(headers or {})}
        async with self.central.session.request(
            method, f"{self.central.url}/api/v1{path}", json=body, headers=sent
        ) as response:
            raw = await response.read()
            parsed = orjson.loads(raw) if raw else None
            return response.status, parsed, response.headers

    async def ok(self, tenant: Tenant, method: str, path: str, body: Any = None) -> Any:
        status, answer, _ = await self.api(tenant, method, path, body)
        assert status in (200, 201, 204), (tenant.name, method, path, status, answer)
        return answer

    async def synced(self) -> None:
        """Wait until the proxy holds every environment at Postgres's version."""
        rows = await self.central.db.fetch("SELECT id::text AS id, version FROM environments")
        for row in rows:
            await self.proxy.loaded(row["id"], row["version"])

    async def revision(self, tenant: Tenant, path: str) -> str:
        _, _, headers = await self.api(tenant, "GET", path)
        return str(headers["ETag"])


async def _build_tenant(world: World, tenant: Tenant) -> None:
    await world.ok(tenant, "POST", "/projects", {"key": "shop", "name": "Shop"})
    for env in ENVS:
        await world.ok(tenant, "POST", "/projects/shop/environments", {"key": env})
        tenant.env_ids[env] = str(
            await world.central.db.fetchval(
                "SELECT e.id::text FROM environments e JOIN projects p ON p.id = e.project_id"
                " WHERE e.tenant_id = $1 AND p.key = 'shop' AND e.key = $2",
                tenant.tenant_id,
                env,
            )
        )
    variants = {
        f"{env}-{tag}": f"{tenant.name}-{env}-{tag}-value" for env in ENVS for tag in ("a", "b")
    }
    await world.ok(tenant, "POST", "/projects/shop/flags",
                   {"key": "checkout", "type": "string", "variants": variants})  # fmt: skip
    await world.ok(tenant, "POST", "/projects/shop/flags",
                   {"key": "hostile", "type": "boolean",
                    "variants": {"on": True, "off": False}})  # fmt: skip
    await world.ok(tenant, "PUT", "/projects/shop/segments/pro",
                   {"definition": {"==": [{"var": "plan"}, f"{tenant.name}-pro"]}})  # fmt: skip
    for env in ENVS:
        targeting = {
            "if": [
                {"==": [{"var": "email"}, marker(tenant.name, env)]},
                f"{env}-b",
                {"if": [{"$ref": "pro"}, f"{env}-b", f"{env}-a"]},
            ]
        }
        await world.ok(tenant, "PUT", f"/projects/shop/flags/checkout/environments/{env}",
                       {"state": "ENABLED", "defaultVariant": f"{env}-a",
                        "targeting": targeting})  # fmt: skip
        hostile = {"if": [{"regex_match": [{"var": "s"}, HOSTILE_PATTERN]}, "on", "off"]}
        await world.ok(tenant, "PUT", f"/projects/shop/flags/hostile/environments/{env}",
                       {"state": "ENABLED", "defaultVariant": "off",
                        "targeting": hostile})  # fmt: skip
        for kind in KINDS:
            created = await world.ok(
                tenant, "POST", f"/projects/shop/environments/{env}/keys", {"kind": kind}
            )
            tenant.keys[(env, kind)] = created["key"]
            tenant.key_ids[(env, kind)] = created["apiKey"]["id"]


async def build_world(central: Central, start_proxy: StartProxy, **proxy_overrides: Any) -> World:
    globex = await create_tenant(central.db, "globex", plan="enterprise")  # no daily quota
    acme_id = await central.db.fetchval("SELECT id::text FROM tenants WHERE key = 'acme'")
    tenants = {
        "acme": Tenant("acme", central.token, str(acme_id)),
        "globex": Tenant("globex", globex.token, globex.id),
    }
    control_port = int(central.url.rsplit(":", 1)[1])
    world = World(central, None, tenants, control_port, 0)  # type: ignore[arg-type]
    for tenant in tenants.values():
        await _build_tenant(world, tenant)
    world.proxy = await start_proxy(**proxy_overrides)
    world.proxy_port = int(world.proxy.url.rsplit(":", 1)[1])
    await world.synced()
    return world
