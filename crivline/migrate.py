"""Forward-only SQL migrations, applied in order under an advisory lock.

Each file in ``crivline/migrations`` is applied once, in its own transaction, and
recorded with the SHA-256 of its text. A file that changed after it was applied is
refused: the schema on disk and the schema in the database would otherwise disagree
silently. Two migrators started at once serialise on the advisory lock, so the second
one finds everything applied and does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

from crivline.errors import MigrationError

# An arbitrary constant that names "the Crivline migration lock" in pg_advisory_lock.
ADVISORY_LOCK_ID = 0x43524956_4C494E45 & 0x7FFFFFFFFFFFFFFF

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled_migrations() -> list[Migration]:
    """The migrations shipped with this version of Crivline, in order."""
    folder = resources.files("crivline") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(entry.name, entry.read_text(encoding="utf-8")) for entry in files]


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is missing; return the names applied now (empty when up to date)."""
    wanted = bundled_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
    try:
        await conn.execute(_LEDGER)
        done = {
            r["name"]: r["checksum"]
            for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")
        }
        known = {m.name for m in wanted}
        unknown = sorted(set(done) - known)
        if unknown:
            raise MigrationError(
                f"the database has migrations this version does not know: {', '.join(unknown)}"
                " (is it newer than this code?)"
            )
        for migration in wanted:
            recorded = done.get(migration.name)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.name} was edited after it was applied "
                        f"(recorded checksum {recorded[:12]}…, "
                        f"file now {migration.checksum[:12]}…);"
                        " migrations are forward-only: add a new file instead"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
            applied_now.append(migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
    return applied_now


async def pending(conn: asyncpg.Connection) -> list[str]:
    """Names of bundled migrations not yet applied (readiness checks use this)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done: set[str] = set()
    if exists:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
    return [m.name for m in bundled_migrations() if m.name not in done]
