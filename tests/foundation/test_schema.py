"""The central schema on a real PostgreSQL: migrations, constraints, the audit log."""

import asyncio

import asyncpg
import orjson
import pytest

from crivline import tokens
from crivline.errors import MigrationError
from crivline.migrate import Migration, bundled_migrations, migrate, pending
from crivline.seed import create_tenant, seed_demo
from crivline.snapshot import set_json_codecs


async def test_template_is_fully_migrated(db: asyncpg.Connection) -> None:
    assert await pending(db) == []
    assert await migrate(db) == []  # a second run applies nothing


async def test_concurrent_migrators_apply_the_schema_once(
    pg_server: object, database_url: str
) -> None:
    base, _, _ = database_url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute('CREATE DATABASE "race_target"')
    await admin.close()
    conns = [await asyncpg.connect(f"{base}/race_target") for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        names = [m.name for m in bundled_migrations()]
        assert sorted(r for r in results if r) == [names]  # exactly one did the work
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(names)
    finally:
        for c in conns:
            await c.close()
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute('DROP DATABASE "race_target" WITH (FORCE)')
        await admin.close()


async def test_an_edited_migration_is_refused(db: asyncpg.Connection) -> None:
    edited = [Migration(m.name, m.sql + "\n-- edited\n") for m in bundled_migrations()]
    with pytest.raises(MigrationError, match="was edited after it was applied"):
        await migrate(db, edited)


async def test_a_failing_migration_leaves_nothing_behind(db: asyncpg.Connection) -> None:
    broken = [*bundled_migrations(), Migration("9999_broken.sql", "CREATE TABLE x (); SELECT 1/0;")]
    with pytest.raises(MigrationError, match=r"9999_broken\.sql failed"):
        await migrate(db, broken)
    assert await db.fetchval("SELECT to_regclass('x')") is None
    assert await pending(db) == []


async def _project(db: asyncpg.Connection, tenant_key: str, project_key: str = "web") -> dict:
    tenant = await create_tenant(db, tenant_key)
    project_id = await db.fetchval(
        "INSERT INTO projects (tenant_id, key, name) VALUES ($1, $2, 'Web') RETURNING id",
        tenant.id,
        project_key,
    )
    env_id = await db.fetchval(
        "INSERT INTO environments (tenant_id, project_id, key, name)"
        " VALUES ($1, $2, 'prod', 'Prod') RETURNING id",
        tenant.id,
        project_id,
    )
    return {"tenant": tenant.id, "project": project_id, "env": env_id}


async def _flag(db: asyncpg.Connection, ids: dict, key: str) -> None:
    await db.execute(
        "INSERT INTO flags (tenant_id, project_id, key, type, variants)"
        " VALUES ($1, $2, $3, 'boolean', '{\"on\": true}')",
        ids["tenant"],
        ids["project"],
        key,
    )


async def test_flag_keys_are_unique_per_project_only(db: asyncpg.Connection) -> None:
    a = await _project(db, "tenant-a")
    b = await _project(db, "tenant-b")
    await _flag(db, a, "dark-mode")
    await _flag(db, b, "dark-mode")  # same key, other project: fine
    with pytest.raises(asyncpg.UniqueViolationError):
        await _flag(db, a, "dark-mode")


async def test_scoped_uniqueness_of_projects_and_environments(db: asyncpg.Connection) -> None:
    a = await _project(db, "tenant-a")
    await _project(db, "tenant-b")  # same project key "web" in another tenant: fine
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'web', 'x')", a["tenant"]
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO environments (tenant_id, project_id, key, name)"
            " VALUES ($1, $2, 'prod', 'x')",
            a["tenant"],
            a["project"],
        )


async def test_rows_cannot_point_across_tenants(db: asyncpg.Connection) -> None:
    a = await _project(db, "tenant-a")
    b = await _project(db, "tenant-b")
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # tenant A's row in B's project
        await db.execute(
            "INSERT INTO environments (tenant_id, project_id, key, name)"
            " VALUES ($1, $2, 'stage', 'x')",
            a["tenant"],
            b["project"],
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(
            "INSERT INTO api_keys (tenant_id, project_id, environment_id, kind, key_hash,"
            " display_prefix) VALUES ($1, $2, $3, 'server', $4, 'abcdefgh')",
            a["tenant"],
            a["project"],
            b["env"],
            tokens.digest("x"),
        )


async def test_check_constraints_hold(db: asyncpg.Connection) -> None:
    a = await _project(db, "tenant-a")
    with pytest.raises(asyncpg.CheckViolationError):
        await _flag(db, a, "-starts-with-dash")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO flags (tenant_id, project_id, key, type, variants)"
            " VALUES ($1, $2, 'k', 'decimal', '{}')",
            a["tenant"],
            a["project"],
        )
    with pytest.raises(asyncpg.CheckViolationError):  # only hashes, never raw keys
        await db.execute(
            "INSERT INTO api_keys (tenant_id, project_id, environment_id, kind, key_hash,"
            " display_prefix) VALUES ($1, $2, $3, 'server', 'crv_srv_raw', 'abcdefgh')",
            a["tenant"],
            a["project"],
            a["env"],
        )


async def test_audit_log_is_append_only(db: asyncpg.Connection) -> None:
    await create_tenant(db, "tenant-a")
    assert await db.fetchval("SELECT count(*) FROM audit_log") >= 1
    for statement in (
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'someone else'") == 0


async def test_bump_increments_and_notifies_only_on_commit(
    db: asyncpg.Connection, database_url: str
) -> None:
    ids = await _project(db, "tenant-a")
    listener = await asyncpg.connect(database_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("crivline_changes", lambda *args: received.put_nowait(args[3]))
    try:
        async with db.transaction():
            v = await db.fetchval("SELECT crivline_bump_environment($1)", ids["env"])
        payload = orjson.loads(await asyncio.wait_for(received.get(), 5))
        assert payload["e"] == str(ids["env"])
        assert payload["v"] == v == 2
        assert payload["t"] == ids["tenant"]

        tx = db.transaction()
        await tx.start()
        await db.fetchval("SELECT crivline_bump_environment($1)", ids["env"])
        await tx.rollback()
        async with db.transaction():
            v = await db.fetchval("SELECT crivline_bump_environment($1)", ids["env"])
        payload = orjson.loads(await asyncio.wait_for(received.get(), 5))
        assert payload["v"] == v == 3  # the rolled-back bump never announced anything
    finally:
        await listener.close()


async def test_tenant_tokens_are_stored_only_as_hashes(db: asyncpg.Connection) -> None:
    tenant = await create_tenant(db, "acme")
    assert tenant.token.startswith("crv_mgt_")
    stored = await db.fetchrow("SELECT token_hash, display_prefix FROM management_tokens")
    assert bytes(stored["token_hash"]) == tokens.digest(tenant.token)
    dump = str(await db.fetch("SELECT * FROM management_tokens")) + str(
        await db.fetch("SELECT * FROM audit_log")
    )
    assert tenant.token not in dump


async def test_demo_seed_is_all_or_nothing(db: asyncpg.Connection) -> None:
    demo = await seed_demo(db)
    assert set(demo.keys) == {"development", "production"}
    assert demo.keys["development"]["server"].startswith("crv_srv_")
    assert demo.keys["development"]["client"].startswith("crv_cli_")
    tenants = await db.fetchval("SELECT count(*) FROM tenants")
    with pytest.raises(Exception, match="already exists"):
        await seed_demo(db)  # the second seed fails on the tenant and leaves nothing extra
    assert await db.fetchval("SELECT count(*) FROM tenants") == tenants
    assert await db.fetchval("SELECT count(*) FROM projects") == 1


async def test_an_upgrade_keeps_existing_environments_on_v2_bucketing(
    pg_server: object, database_url: str
) -> None:
    """Environments older than the bucketing scheme keep v2 (nobody is re-bucketed by an
    upgrade); environments created after it get flagd's current v3."""
    base, _, _ = database_url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute('CREATE DATABASE "upgrade_target"')
    await admin.close()
    conn = await asyncpg.connect(f"{base}/upgrade_target")
    try:
        await set_json_codecs(conn)
        first, *later = bundled_migrations()
        await migrate(conn, [first])
        # Rows as the first schema knew them (the seed of today writes later tables too).
        tenant = await conn.fetchval(
            "INSERT INTO tenants (key, name) VALUES ('acme', 'Acme') RETURNING id"
        )
        project = await conn.fetchval(
            "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'web', 'Web') RETURNING id",
            tenant,
        )
        await conn.execute(
            "INSERT INTO environments (tenant_id, project_id, key, name)"
            " VALUES ($1, $2, 'prod', 'Prod')",
            tenant,
            project,
        )
        ids = {"tenant": tenant, "project": project}
        assert [m.name for m in later][:1] == ["0002_fractional_bucketing.sql"]
        await migrate(conn)
        await conn.execute(
            "INSERT INTO environments (tenant_id, project_id, key, name) "
            "VALUES ($1, $2, 'after', 'After')",
            ids["tenant"],
            ids["project"],
        )
        rows = await conn.fetch("SELECT key, fractional_bucketing FROM environments ORDER BY key")
        assert [tuple(r) for r in rows] == [("after", "v3"), ("prod", "v2")]
    finally:
        await conn.close()
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute('DROP DATABASE "upgrade_target" WITH (FORCE)')
        await admin.close()


async def test_an_upgrade_starts_each_flag_set_version_at_its_version(
    pg_server: object, database_url: str
) -> None:
    """Migration 0007 on existing rows: the flag set's version starts at the version (every
    earlier bump changed what SDKs saw, so the ETags they hold stay valid). From then on
    a bump for keys or the plan moves only the version; the older forms of the bump, and
    a caller that cannot say (NULL), move both."""
    base, _, _ = database_url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres")
    await admin.execute('CREATE DATABASE "flags_version_upgrade"')
    await admin.close()
    conn = await asyncpg.connect(f"{base}/flags_version_upgrade")
    try:
        await set_json_codecs(conn)
        migrations = bundled_migrations()
        earlier = [m for m in migrations if m.name < "0007"]
        assert [m.name for m in migrations[len(earlier) :]][:1] == ["0007_flags_version.sql"]
        await migrate(conn, earlier)
        tenant = await conn.fetchval(
            "INSERT INTO tenants (key, name) VALUES ('acme', 'Acme') RETURNING id"
        )
        project = await conn.fetchval(
            "INSERT INTO projects (tenant_id, key, name) VALUES ($1, 'web', 'Web') RETURNING id",
            tenant,
        )
        env = await conn.fetchval(
            "INSERT INTO environments (tenant_id, project_id, key, name)"
            " VALUES ($1, $2, 'prod', 'Prod') RETURNING id",
            tenant,
            project,
        )
        for _ in range(2):
            await conn.execute("SELECT crivline_bump_environment($1)", env)
        await migrate(conn)

        async def versions() -> tuple[int, int]:
            row = await conn.fetchrow(
                "SELECT version, flags_version FROM environments WHERE id = $1", env
            )
            return row["version"], row["flags_version"]

        assert await versions() == (3, 3)
        steps = [
            ("SELECT crivline_bump_environment($1, NULL::text, false)", (4, 3)),
            ("SELECT crivline_bump_environment($1, NULL::text, false)", (5, 3)),
            ("SELECT crivline_bump_environment($1, NULL::text, true)", (6, 6)),
            ("SELECT crivline_bump_environment($1, NULL::text, false)", (7, 6)),
            ("SELECT crivline_bump_environment($1, NULL::text)", (8, 8)),
            ("SELECT crivline_bump_environment($1, NULL::text, false)", (9, 8)),
            ("SELECT crivline_bump_environment($1)", (10, 10)),
            ("SELECT crivline_bump_environment($1, NULL::text, false)", (11, 10)),
            ("SELECT crivline_bump_environment($1, NULL::text, NULL::boolean)", (12, 12)),
        ]
        for statement, expected in steps:
            assert await conn.fetchval(statement, env) == expected[0]
            assert await versions() == expected, statement
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE environments SET flags_version = version + 1 WHERE id = $1", env
            )
        fresh = await conn.fetchrow(
            "INSERT INTO environments (tenant_id, project_id, key, name)"
            " VALUES ($1, $2, 'new', 'New') RETURNING version, flags_version",
            tenant,
            project,
        )
        assert tuple(fresh) == (1, 1)
    finally:
        await conn.close()
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute('DROP DATABASE "flags_version_upgrade" WITH (FORCE)')
        await admin.close()


async def test_a_key_only_bump_notifies_like_any_other(
    db: asyncpg.Connection, database_url: str
) -> None:
    """The edges need the key: the notification is the one every bump sends."""
    ids = await _project(db, "tenant-a")
    listener = await asyncpg.connect(database_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("crivline_changes", lambda *args: received.put_nowait(args[3]))
    try:
        v = await db.fetchval("SELECT crivline_bump_environment($1, NULL::text, false)", ids["env"])
        payload = orjson.loads(await asyncio.wait_for(received.get(), 5))
        assert set(payload) == {"e", "v", "t", "p", "at"}
        assert (payload["e"], payload["v"]) == (str(ids["env"]), v)
    finally:
        await listener.close()
