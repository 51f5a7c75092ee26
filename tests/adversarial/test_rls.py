"""The second net under control's tenant filters: row-level security (migration 0005),
and what each part's database role may and may not do.

Every test connects as the part's own login role (``support.roles.part_url``), runs the
statements a buggy or subverted part might run, and checks that Postgres itself
refuses them — whatever the data layer above would have done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from support.roles import part_url

from crivline.seed import create_tenant, seed_demo, set_plan

# Every tenant-owned table, with the column that names the tenant.
TENANT_TABLES = {
    "tenants": "id",
    "management_tokens": "tenant_id",
    "projects": "tenant_id",
    "environments": "tenant_id",
    "flags": "tenant_id",
    "flag_environments": "tenant_id",
    "segments": "tenant_id",
    "api_keys": "tenant_id",
    "audit_log": "tenant_id",
    "idempotency_keys": "tenant_id",
    "subscriptions": "tenant_id",
    "stripe_events": "tenant_id",
    "usage": "tenant_id",
}
ALL_TABLES = (*TENANT_TABLES, "plans", "edge_credentials", "usage_batches", "schema_migrations")
SET_TENANT = "SELECT set_config('crivline.tenant_id', $1, true)"


async def as_tenant(conn: asyncpg.Connection, tenant: str, *statements: str, arg: str = "") -> None:
    """Run ``statements`` in one transaction scoped to ``tenant`` (as control does); each
    gets ``arg`` as $1 when it has one."""
    async with conn.transaction():
        await conn.execute(SET_TENANT, tenant)
        for statement in statements:
            await conn.execute(statement, *((arg,) if "$1" in statement else ()))


@dataclass
class Two:
    """Two tenants with the demo's objects each (projects, environments, flags, keys …)."""

    a: str
    b: str


@pytest.fixture
async def two(db: asyncpg.Connection) -> Two:
    ids = []
    for key in ("tenant-a", "tenant-b"):
        await seed_demo(db, key)
        await set_plan(db, key, "pro")  # a subscriptions row
        ids.append(str(await db.fetchval("SELECT id FROM tenants WHERE key = $1", key)))
    a, b = ids
    # A row in the tables the demo leaves empty, for each tenant.
    for tenant in (a, b):
        env, project = await db.fetchrow(
            "SELECT id, project_id FROM environments WHERE tenant_id = $1 LIMIT 1", tenant
        )
        await db.execute(
            "INSERT INTO segments (tenant_id, project_id, key, definition)"
            " VALUES ($1, $2, 'beta', '{}')",
            tenant,
            project,
        )
        await db.execute(
            "INSERT INTO usage (tenant_id, environment_id, day, kind, count)"
            " VALUES ($1, $2, current_date, 'poll', 1)",
            tenant,
            env,
        )
        await db.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, response_status,"
            " response_body) VALUES ($1, 'k', '\\x00', 200, 'null')",
            tenant,
        )
        await db.execute(
            "INSERT INTO stripe_events (id, type, created, tenant_id, outcome)"
            " VALUES ($1, 'customer.subscription.updated', now(), $2, 'applied')",
            f"evt_{tenant}",
            tenant,
        )
    return Two(a, b)


async def _connect(database_url: str, part: str) -> asyncpg.Connection:
    return await asyncpg.connect(part_url(database_url, part))


@pytest.fixture
async def control_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(database_url, "control")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def syncd_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(database_url, "syncd")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def relay_db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await _connect(database_url, "relay")
    try:
        yield conn
    finally:
        await conn.close()


# -- the RLS net under control ----------------------------------------------------------


async def test_a_statement_without_its_tenant_filter_sees_only_the_current_tenant(
    control_db: asyncpg.Connection, db: asyncpg.Connection, two: Two
) -> None:
    for table, column in TENANT_TABLES.items():
        total = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} IN ($1, $2)",
                                  two.a, two.b)  # fmt: skip
        own = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", two.a)
        assert 0 < own < total, table  # both tenants have rows: the filter has work to do
        async with control_db.transaction():
            await control_db.execute(SET_TENANT, two.a)
            seen = await control_db.fetch(f"SELECT {column}::text AS tenant FROM {table}")
        assert {r["tenant"] for r in seen} == {two.a}, table
        assert len(seen) == own, table


async def test_without_a_tenant_control_sees_nothing(
    control_db: asyncpg.Connection, two: Two
) -> None:
    for table in TENANT_TABLES:
        assert await control_db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        async with control_db.transaction():  # a set tenant ends with its transaction
            await control_db.execute(SET_TENANT, two.a)
            assert await control_db.fetchval(f"SELECT count(*) FROM {table}") > 0, table
        assert await control_db.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_a_row_for_another_tenant_is_refused(
    control_db: asyncpg.Connection, db: asyncpg.Connection, two: Two
) -> None:
    for statement in (
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'planted', 'x')",
        "INSERT INTO audit_log (tenant_id, actor, action, entity_type)"
        " VALUES ($1, 'x', 'forged', 'tenant')",
        "UPDATE segments SET tenant_id = $1",  # moving one's own row to another tenant
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await as_tenant(control_db, two.a, statement, arg=two.b)
    async with control_db.transaction():  # another tenant's rows cannot be reached at all
        await control_db.execute(SET_TENANT, two.a)
        assert await control_db.execute("UPDATE projects SET name = 'taken'") != "UPDATE 0"
        assert await control_db.execute("DELETE FROM segments WHERE tenant_id = $1", two.b) == (
            "DELETE 0"
        )
        assert await control_db.fetchval("SELECT crivline_bump_environment(id) FROM environments"
                                         " WHERE tenant_id = $1", two.b) is None  # fmt: skip
        for form in ("(id, NULL::text, false)", "(id, NULL::text, true)"):
            assert await control_db.fetchval(
                f"SELECT crivline_bump_environment{form} FROM environments WHERE tenant_id = $1",
                two.b,
            ) is None  # fmt: skip
        assert await control_db.execute(  # another tenant's flag-set version: untouchable
            "UPDATE environments SET flags_version = 1 WHERE tenant_id = $1", two.b
        ) == "UPDATE 0"  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM projects WHERE name = 'taken'") == (
        await db.fetchval("SELECT count(*) FROM projects WHERE tenant_id = $1", two.a)
    )
    assert await db.fetchval("SELECT count(*) FROM projects WHERE key = 'planted'") == 0


async def test_control_cannot_bypass_rls_or_rewrite_the_audit_log(
    control_db: asyncpg.Connection, db: asyncpg.Connection, two: Two
) -> None:
    role = await control_db.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles"
        " WHERE rolname = current_user"
    )
    assert role is not None
    assert not any(role.values())
    await control_db.execute("SET row_security = off")  # refuses rather than bypasses
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        await control_db.fetch("SELECT * FROM projects")
    await control_db.execute("RESET row_security")
    for statement in (
        "ALTER TABLE projects DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE projects NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY control_tenant ON projects",
        "CREATE POLICY mine ON projects TO crivline_control USING (true)",
        "ALTER ROLE crivline_control BYPASSRLS",
        "SET ROLE crivline_syncd",
        "CREATE TABLE planted (x int)",
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "DELETE FROM management_tokens",
        "UPDATE management_tokens SET scope = 'admin'",
        "INSERT INTO tenants (key, name) VALUES ('planted', 'x')",
        "UPDATE plans SET evaluations_per_day = NULL",
        "INSERT INTO edge_credentials (edge_id, token_hash, display_prefix)"
        " VALUES ('e', sha256('x'), 'abcdefgh')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_tenant(control_db, two.a, statement)
    audit = await db.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'someone else'")
    assert audit == 0


# -- syncd and the relay ----------------------------------------------------------------


async def test_syncd_reads_every_tenant_and_writes_nothing(
    syncd_db: asyncpg.Connection, db: asyncpg.Connection, two: Two
) -> None:
    for table in ("tenants", "projects", "environments", "flags", "flag_environments",
                  "segments", "api_keys", "subscriptions"):  # fmt: skip
        column = TENANT_TABLES[table]
        seen = {r[0] for r in await syncd_db.fetch(f"SELECT {column}::text FROM {table}")}
        assert {two.a, two.b} <= seen, table  # across tenants, by its own policy
    for table in ("audit_log", "management_tokens", "idempotency_keys", "usage",
                  "stripe_events", "edge_credentials", "usage_batches"):  # fmt: skip
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await syncd_db.fetch(f"SELECT * FROM {table} LIMIT 1")
    env = await db.fetchval("SELECT id FROM environments WHERE tenant_id = $1 LIMIT 1", two.a)
    for statement, args in (
        *((f"DELETE FROM {table}", ()) for table in ALL_TABLES),
        *((f"UPDATE {t} SET {column} = {column}", ()) for t, column in TENANT_TABLES.items()),
        ("INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'planted', 'x')", (two.a,)),
        (
            "INSERT INTO usage (tenant_id, environment_id, day, kind, count)"
            " VALUES ($1, $2, current_date, 'poll', 1)",
            (two.a, env),
        ),
        ("SELECT crivline_bump_environment($1)", (env,)),
        ("SELECT crivline_bump_environment($1, NULL::text)", (env,)),
        ("SELECT crivline_bump_environment($1, NULL::text, false)", (env,)),
        ("SELECT * FROM crivline_management_token(sha256('x'))", ()),
        (
            "SELECT crivline_add_usage(ARRAY[$1::uuid], ARRAY[current_date], ARRAY['poll'],"
            " ARRAY[1::bigint])",
            (env,),
        ),
        ("SELECT crivline_purge_idempotency_keys(interval '0')", ()),
        ("CREATE TABLE planted (x int)", ()),
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await syncd_db.execute(statement, *args)
    assert await db.fetchval("SELECT count(*) FROM projects WHERE key = 'planted'") == 0


async def test_syncd_and_the_relay_may_listen(
    syncd_db: asyncpg.Connection, relay_db: asyncpg.Connection
) -> None:
    for conn in (syncd_db, relay_db):
        await conn.execute("LISTEN crivline_changes")
        await conn.execute("UNLISTEN crivline_changes")


async def test_the_relay_reads_nothing(relay_db: asyncpg.Connection, two: Two) -> None:
    for table in ALL_TABLES:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay_db.fetch(f"SELECT * FROM {table} LIMIT 1")
    env = "00000000-0000-0000-0000-000000000000"
    for form in ("($1::uuid)", "($1::uuid, NULL::text)", "($1::uuid, NULL::text, false)"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay_db.execute(f"SELECT crivline_bump_environment{form}", env)


async def test_no_part_owns_a_table_or_holds_a_dangerous_attribute(
    db: asyncpg.Connection,
) -> None:
    roles = ("crivline_control", "crivline_syncd", "crivline_relay")
    owned = await db.fetch(
        "SELECT c.relname, r.rolname FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
        " WHERE r.rolname = ANY($1::text[])",
        list(roles),
    )
    assert owned == []
    for row in await db.fetch(
        "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication"
        " FROM pg_roles WHERE rolname = ANY($1::text[])",
        list(roles),
    ):
        assert not any(v for k, v in row.items() if k != "rolname"), row
    forced = await db.fetch(
        "SELECT relname FROM pg_class WHERE relname = ANY($1::text[])"
        " AND relrowsecurity AND relforcerowsecurity",
        list(TENANT_TABLES),
    )
    assert {r["relname"] for r in forced} == set(TENANT_TABLES)


async def test_a_new_tenant_made_by_the_owner_is_visible_only_to_itself(
    control_db: asyncpg.Connection, db: asyncpg.Connection, two: Two
) -> None:
    c = await create_tenant(db, "tenant-c")
    async with control_db.transaction():
        await control_db.execute(SET_TENANT, c.id)
        keys = [r["key"] for r in await control_db.fetch("SELECT key FROM tenants")]
    assert keys == ["tenant-c"]
