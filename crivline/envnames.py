"""Naming an environment the way operators do: ``TENANT/PROJECT/ENVIRONMENT`` (keys, as
in the control API) or its id. Shared by ``crivline export`` and syncd's
``/admin/resync``."""

from __future__ import annotations

import re

import asyncpg

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_BY_KEYS = """
SELECT e.id::text
  FROM environments e
  JOIN projects p ON p.id = e.project_id
  JOIN tenants t ON t.id = e.tenant_id
 WHERE t.key = $1 AND p.key = $2 AND e.key = $3
"""
_BY_ID = "SELECT id::text FROM environments WHERE id = $1"

FORM = "TENANT/PROJECT/ENVIRONMENT (keys) or the environment's id"


def well_formed(name: str) -> bool:
    parts = name.split("/")
    return bool(_UUID.fullmatch(name)) or (len(parts) == 3 and all(parts))


async def find_environment(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> str | None:
    """The id of the environment ``name`` names, or None. Call with a well-formed name
    (:func:`well_formed`)."""
    if _UUID.fullmatch(name):
        found = await conn.fetchval(_BY_ID, name)
    else:
        found = await conn.fetchval(_BY_KEYS, *name.split("/"))
    return None if found is None else str(found)
