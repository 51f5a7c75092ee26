"""Scope filters: an edge receives exactly the environments it serves, and their keys."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis
from syncd_testkit import (
    INTERVAL,
    Announcements,
    StartSyncd,
    add_flag,
    add_key,
    central,
    edge,
    make_project,
    set_default,
    wait_for,
)

from crivline import tokens
from crivline.keyspace import Keyspace
from syncd.scope import Scope, ScopeView

KEYS = Keyspace("crivline:")  # the environment names do not depend on the edge


async def all_key_owners(redis: aioredis.Redis) -> set[str]:
    owners = set()
    async for name in redis.scan_iter(match="crivline:key:*"):
        owner = await redis.hget(name, "environment")
        owners.add(owner.decode())
    return owners


async def test_an_edge_scoped_to_one_project_gets_only_that_project(
    db: asyncpg.Connection,
    start_syncd: StartSyncd,
    redis: aioredis.Redis,
    announcements: Announcements,
) -> None:
    served = await make_project(db, "acme", "web")
    sibling = await make_project(db, "acme", "mobile", tenant_id=served.tenant_id)
    namesake = await make_project(db, "globex", "web")  # same project key, other tenant
    for project in (served, sibling, namesake):
        await add_flag(db, project, "checkout")
        for env in project.environments:
            await add_key(db, project, env)
    syncd = await start_syncd(scope=Scope(tenant="acme", project="web"))
    inside = set(served.environments.values())
    outside = set(sibling.environments.values()) | set(namesake.environments.values())

    # Writes everywhere; then a change in scope, so we know syncd has seen them all.
    for project in (sibling, namesake):
        await set_default(db, project, "production", "checkout", "on")
        await add_key(db, project, "development")
    version = await set_default(db, served, "production", "checkout", "on")
    env = served.environments["production"]

    async def arrived() -> bool:
        return await syncd.store.version(env) == version

    await wait_for(arrived, 5, "the in-scope change")
    # One more reconciliation pass too, so nothing is still on its way.
    passes = syncd.sample("crivline_syncd_reconciliations_total", result="ok")
    await wait_for(
        lambda: syncd.sample("crivline_syncd_reconciliations_total", result="ok") > passes + 1,
        5,
        "two more reconciliation passes",
    )

    assert await syncd.store.served() == inside
    for env_id in inside:
        assert await edge(syncd.store, env_id) == await central(db, env_id)
    for env_id in outside:
        assert await redis.exists(KEYS.environment(env_id)) == 0
        assert await redis.exists(KEYS.environment_keys(env_id)) == 0
        assert announcements.of(env_id) == []
    assert await all_key_owners(redis) == inside
    ignored = syncd.sample("crivline_syncd_wakeups_total", source="postgres", fate="ignored")
    assert ignored >= 4  # the out-of-scope notifications cost no rebuild
    assert syncd.sample("crivline_syncd_rebuilds_total", outcome="out_of_scope") == 0


async def test_an_edge_scoped_to_an_environment_key_serves_it_in_every_tenant(
    db: asyncpg.Connection, start_syncd: StartSyncd, redis: aioredis.Redis
) -> None:
    acme = await make_project(db, "acme", "web")
    globex = await make_project(db, "globex", "shop")
    syncd = await start_syncd(scope=Scope(environment="production"))
    wanted = {acme.environments["production"], globex.environments["production"]}
    assert await syncd.store.served() == wanted
    # A new environment with that key, in a new project, arrives by notification.
    later = await make_project(db, "initech", "tps", environments=("production", "qa"))
    new = later.environments["production"]

    async def arrived() -> bool:
        return new in await syncd.store.served()

    await wait_for(arrived, 5, "the new production environment")
    assert await redis.exists(KEYS.environment(later.environments["qa"])) == 0
    # qa was looked at once (it could have been in scope), then remembered as outside.
    await wait_for(
        lambda: syncd.sample("crivline_syncd_rebuilds_total", outcome="out_of_scope") == 1,
        5,
        "the qa environment to be looked at",
    )


async def test_environments_leaving_the_scope_or_deleted_leave_redis(
    db: asyncpg.Connection, start_syncd: StartSyncd, announcements: Announcements
) -> None:
    project = await make_project(db, environments=("production", "staging", "doomed"))
    secret = await add_key(db, project, "doomed")
    syncd = await start_syncd(scope=Scope(project="app"))
    assert await syncd.store.served() == set(project.environments.values())

    # Renamed out of scope? Not possible for a project filter: move the project's key.
    staging = project.environments["staging"]
    doomed = project.environments["doomed"]
    async with db.transaction():
        await db.execute("UPDATE projects SET key = 'renamed' WHERE id = $1", project.project_id)
        for env in project.environments.values():
            await db.execute("SELECT crivline_bump_environment($1)", env)

    async def gone() -> bool:
        return await syncd.store.served() == set()

    await wait_for(gone, 5, "the renamed project to leave the edge")
    assert await syncd.store.read_environment(staging) is None
    assert await syncd.store.read_api_key(tokens.hex_digest(secret)) is None
    assert announcements.of(doomed)[-1] == {"e": doomed, "v": 0, "removed": True}

    # Back in scope, then the environment is deleted outright (no notification can
    # name a deleted environment: reconciliation notices it is gone).
    async with db.transaction():
        await db.execute("UPDATE projects SET key = 'app' WHERE id = $1", project.project_id)
        for env in project.environments.values():
            await db.execute("SELECT crivline_bump_environment($1)", env)

    async def back() -> bool:
        return await syncd.store.served() == set(project.environments.values())

    await wait_for(back, 5, "the project back in scope")
    async with db.transaction():
        await db.execute("DELETE FROM api_keys WHERE environment_id = $1", doomed)
        await db.execute("DELETE FROM flag_environments WHERE environment_id = $1", doomed)
        await db.execute("DELETE FROM environments WHERE id = $1", doomed)

    async def deleted() -> bool:
        return doomed not in await syncd.store.served()

    await wait_for(deleted, INTERVAL + 1.5, "the deleted environment to leave the edge")
    assert await syncd.store.read_environment(doomed) is None
    assert await syncd.store.read_environment(staging) is not None


def test_scope_matching_and_the_wakeup_filter() -> None:
    scope = Scope(tenant="acme", project="web")
    assert scope.matches("acme", "web", "production")
    assert not scope.matches("acme", "mobile", "production")
    assert not scope.matches("globex", "web", "production")
    assert Scope().everything
    assert Scope().matches("a", "b", "c")
    assert Scope(environment="production").describe() == "environment=production"

    view = ScopeView(scope)
    view.refresh(frozenset({"e1"}), frozenset({"t1"}), frozenset({"p1"}))
    assert view.admits("e1", "t9", "p9")  # one we serve: always
    assert view.admits("e2", "t1", "p1")  # new, in a project we serve: look at it
    assert not view.admits("e2", "t2", "p1")  # another tenant
    assert not view.admits("e2", "t1", "p2")  # another project
    assert view.admits("e2", None, None)  # a payload without ids: look at it
    view.outside.add("e3")
    assert not view.admits("e3", "t1", "p1")


async def test_archived_environments_and_projects_leave_the_edge(
    db: asyncpg.Connection, start_syncd: StartSyncd, announcements: Announcements
) -> None:
    project = await make_project(db, environments=("production", "staging"))
    other = await make_project(db, "acme", "mobile", tenant_id=project.tenant_id)
    secret = await add_key(db, project, "staging")
    syncd = await start_syncd()
    staging, production = project.environments["staging"], project.environments["production"]
    assert {staging, production} <= await syncd.store.served()

    # An environment archived with no notification at all: reconciliation notices.
    await db.execute("UPDATE environments SET archived_at = now() WHERE id = $1", staging)

    async def staging_gone() -> bool:
        return staging not in await syncd.store.served()

    await wait_for(staging_gone, INTERVAL + 1.5, "the archived environment to leave the edge")
    assert await syncd.store.read_api_key(tokens.hex_digest(secret)) is None
    assert announcements.of(staging)[-1] == {"e": staging, "v": 0, "removed": True}

    # A project archived (its environments not), announced by a bump: its environments go.
    async with db.transaction():
        await db.execute(
            "UPDATE projects SET archived_at = now() WHERE id = $1", project.project_id
        )
        await db.execute("SELECT crivline_bump_environment($1)", production)

    async def production_gone() -> bool:
        return production not in await syncd.store.served()

    await wait_for(production_gone, 5, "the archived project's environment to leave the edge")
    assert set(other.environments.values()) <= await syncd.store.served()
