"""Helpers for the syncd tests: central writes the way control makes them, waiting on
conditions, and the expected edge state read straight from Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis
from support.waiting import eventually

from crivline import tokens
from crivline.edge_store import EdgeStore
from crivline.seed import create_api_key, create_tenant
from crivline.snapshot import load_snapshot
from syncd.daemon import Daemon

T = TypeVar("T")

INTERVAL = 0.3  # seconds between reconciliations in these tests


@dataclass
class Running:
    daemon: Daemon
    task: asyncio.Task[None]
    primary: asyncpg.Pool
    replica: asyncpg.Pool | None
    redis: aioredis.Redis

    @property
    def store(self) -> EdgeStore:
        return self.daemon.store

    def sample(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return value or 0.0

    async def stop(self) -> None:
        await self.daemon.close()
        await self.task  # a daemon that died of an error fails the test here
        for pool in (self.primary, self.replica):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except (TimeoutError, OSError, asyncpg.PostgresError):
                    pool.terminate()
        await self.redis.aclose()


StartSyncd = Callable[..., Awaitable[Running]]


@dataclass
class Announcements:
    """Every message on the changes channel, in order (the subscriber reconnects)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed_at: list[float] = field(default_factory=list)  # wall clock, per subscription

    def versions(self, env: str) -> list[int]:
        return [m["v"] for m in self.messages if m["e"] == env and not m.get("removed")]

    def of(self, env: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["e"] == env]


async def wait_for(
    condition: Callable[[], Any], within: float = 10.0, what: str = "condition"
) -> Any:
    """:func:`support.waiting.eventually` with syncd's longer default patience."""
    return await eventually(condition, within, what, every=0.01)


@dataclass
class Project:
    tenant_id: str
    tenant_key: str
    project_id: str
    project_key: str
    environments: dict[str, str] = field(default_factory=dict)  # key -> id


async def make_project(
    db: asyncpg.Connection,
    tenant_key: str = "acme",
    project_key: str = "app",
    environments: tuple[str, ...] = ("development", "production"),
    tenant_id: str | None = None,
) -> Project:
    if tenant_id is None:
        tenant_id = (await create_tenant(db, tenant_key)).id
    async with db.transaction():
        project_id = await db.fetchval(
            "INSERT INTO projects (tenant_id, key, name) VALUES ($1, $2, $2) RETURNING id::text",
            tenant_id,
            project_key,
        )
        project = Project(tenant_id, tenant_key, project_id, project_key)
        for key in environments:
            project.environments[key] = await db.fetchval(
                """INSERT INTO environments (tenant_id, project_id, key, name)
                   VALUES ($1, $2, $3, $3) RETURNING id::text""",
                tenant_id,
                project_id,
                key,
            )
        for env in project.environments.values():
            await db.execute("SELECT crivline_bump_environment($1)", env)
    return project


async def add_flag(
    db: asyncpg.Connection,
    project: Project,
    key: str,
    variants: dict[str, Any] | None = None,
    default: str = "off",
) -> str:
    variants = variants if variants is not None else {"on": True, "off": False}
    async with db.transaction():
        flag_id: str = await db.fetchval(
            """INSERT INTO flags (tenant_id, project_id, key, type, variants)
               VALUES ($1, $2, $3, 'boolean', $4::jsonb) RETURNING id::text""",
            project.tenant_id,
            project.project_id,
            key,
            variants,
        )
        for env in project.environments.values():
            await db.execute(
                """INSERT INTO flag_environments (tenant_id, project_id, flag_id,
                       environment_id, state, default_variant)
                   VALUES ($1, $2, $3, $4, 'ENABLED', $5)""",
                project.tenant_id,
                project.project_id,
                flag_id,
                env,
                default,
            )
            await db.execute("SELECT crivline_bump_environment($1)", env)
    return flag_id


async def set_default(
    db: asyncpg.Connection, project: Project, env_key: str, flag_key: str, variant: str
) -> int:
    """Change one flag's default variant in one environment; returns the new version."""
    env = project.environments[env_key]
    async with db.transaction():
        await db.execute(
            """UPDATE flag_environments fe SET default_variant = $3
                 FROM flags f
                WHERE f.id = fe.flag_id AND f.project_id = $1 AND f.key = $2
                  AND fe.environment_id = $4""",
            project.project_id,
            flag_key,
            variant,
            env,
        )
        version: int = await db.fetchval("SELECT crivline_bump_environment($1)", env)
    return version


async def add_key(
    db: asyncpg.Connection, project: Project, env_key: str, kind: str = "server"
) -> str:
    env = project.environments[env_key]
    async with db.transaction():
        secret = await create_api_key(
            db,
            project.tenant_id,
            project.project_id,
            env,
            tokens.SecretKind(kind),
            "test key",
            "test",
        )
        await db.execute("SELECT crivline_bump_environment($1)", env)
    return secret


async def revoke_key(db: asyncpg.Connection, secret: str) -> int:
    async with db.transaction():
        env = await db.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 RETURNING environment_id",
            tokens.digest(secret),
        )
        version: int = await db.fetchval("SELECT crivline_bump_environment($1)", env)
    return version


@dataclass(frozen=True)
class EdgeView:
    version: int
    flag_set: bytes
    keys: frozenset[str]


async def central(db: asyncpg.Connection, env: str) -> EdgeView | None:
    snapshot = await load_snapshot(db, env)
    if snapshot is None:
        return None
    return EdgeView(
        snapshot.version,
        snapshot.flag_set_bytes(),
        frozenset(k.key_hash for k in snapshot.keys),
    )


async def edge(store: EdgeStore, env: str) -> EdgeView | None:
    stored = await store.read_environment(env)
    if stored is None:
        return None
    hashes = await store.environment_key_hashes(env)
    for key_hash in hashes:
        assert await store.read_api_key(key_hash) is not None, "a key in the set has no hash"
    return EdgeView(stored.version, stored.flag_set_bytes, frozenset(hashes))
