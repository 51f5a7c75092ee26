"""The parts' database logins: each part connects as a login role that is a member of
its group role (``crivline_control``, ``crivline_syncd``, ``crivline_relay``, made by
migration 0005 with their grants and row-level security policies).

:func:`ensure_logins` is what ``crivline migrate --roles`` runs after the migrations, as
the owner: for each part whose URL is set (``CRIVLINE_CONTROL_DATABASE_URL`` …), the URL's
user becomes a login role with the URL's password, a member of the part's group role,
and never a superuser, BYPASSRLS, CREATEROLE or CREATEDB. Running it again changes
nothing but a password that changed. A URL naming the owner, a superuser or a role that
owns tables is refused: that part would not be held by anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from crivline.errors import ConfigError
from crivline.settings import Settings

GROUPS: dict[str, str] = {
    "control": "crivline_control",
    "syncd": "crivline_syncd",
    "relay": "crivline_relay",
}


@dataclass(frozen=True, slots=True)
class Login:
    part: str
    user: str
    created: bool


def role_url(url: str, user: str, password: str | None = None) -> str:
    """``url`` with its user (and password) replaced: the same server and database."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    credentials = quote(user, safe="")
    if password is not None:
        credentials += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{credentials}@{host}", parts.path, parts.query, ""))


def _credentials(part: str, url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    if not parts.username:
        raise ConfigError(f"CRIVLINE_{part.upper()}_DATABASE_URL names no user")
    password = unquote(parts.password) if parts.password is not None else None
    return unquote(parts.username), password


async def ensure_login(
    conn: asyncpg.Connection, part: str, user: str, password: str | None
) -> Login:
    """Make ``user`` a least-privilege login of ``part``'s group role (idempotent)."""
    group = GROUPS[part]
    variable = f"CRIVLINE_{part.upper()}_DATABASE_URL"
    if user == await conn.fetchval("SELECT current_user"):
        raise ConfigError(f"{variable} names the owner role {user!r}; give {part} its own login")
    row = await conn.fetchrow("SELECT oid, rolsuper FROM pg_roles WHERE rolname = $1", user)
    if row is not None and row["rolsuper"]:
        raise ConfigError(f"{variable} names {user!r}, a superuser; give {part} its own login")
    if row is not None and await conn.fetchval(
        "SELECT exists (SELECT 1 FROM pg_class WHERE relowner = $1)", row["oid"]
    ):
        raise ConfigError(
            f"{variable} names {user!r}, which owns tables; give {part} its own login"
        )
    attributes = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT"
    verb = "CREATE" if row is None else "ALTER"
    statement = await conn.fetchval(f"SELECT format('{verb} ROLE %I {attributes}', $1::text)", user)
    await conn.execute(statement)
    if password is not None:
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", user, password
        )
        await conn.execute(statement)
    if user != group:
        member = await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", user, group)
        if not member:
            statement = await conn.fetchval("SELECT format('GRANT %I TO %I', $1::text, $2::text)",
                                            group, user)  # fmt: skip
            await conn.execute(statement)
    return Login(part, user, created=row is None)


async def ensure_logins(conn: asyncpg.Connection, settings: Settings) -> list[Login]:
    """The login of every part whose own database URL is set."""
    done: list[Login] = []
    for part in GROUPS:
        secret = getattr(settings, f"{part}_database_url")
        if secret is None:
            continue
        user, password = _credentials(part, secret.reveal())
        done.append(await ensure_login(conn, part, user, password))
    return done
