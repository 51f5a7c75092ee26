"""The edge's view of one environment, read from the central Postgres.

``load_snapshot`` reads, in one REPEATABLE READ transaction, the environment's version
(and its flag set's version), its live flags as a flagd flag-set document, and its live
API keys — so they always belong together. ``build_flag_set`` is the pure part: rows
in, document out. The control API's ``GET …/flagset`` and syncd both use this module, so
what control shows is exactly what an edge serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

JSON = Any


@dataclass(frozen=True, slots=True)
class EdgeKey:
    """An API key as the edge knows it: its hash and what it may read."""

    key_hash: str  # hex SHA-256
    id: str
    kind: str  # "server" | "client"
    expires_at: float | None  # epoch seconds


@dataclass(frozen=True, slots=True)
class EnvironmentSnapshot:
    environment_id: str
    environment_key: str
    project_id: str
    project_key: str
    tenant_id: str
    tenant_key: str
    version: int
    flag_set: dict[str, JSON]
    keys: tuple[EdgeKey, ...]
    # environments.flags_version: the version of the last bump that changed the flag set
    # (a bump for keys or the plan leaves it). 0: not given (a snapshot made by hand),
    # taken as ``version``.
    flags_version: int = 0

    @property
    def served_version(self) -> int:
        """The version SDKs are shown for this flag set (ETags, stream ids)."""
        if 0 < self.flags_version <= self.version:
            return self.flags_version
        return self.version

    def flag_set_bytes(self) -> bytes:
        return serialize_flag_set(self.flag_set)


def serialize_flag_set(flag_set: Mapping[str, JSON]) -> bytes:
    """Canonical bytes of a flag set: sorted keys, so equal sets give equal bytes."""
    return orjson.dumps(flag_set, option=orjson.OPT_SORT_KEYS)


def flag_definition(
    *,
    state: str,
    variants: Mapping[str, JSON],
    default_variant: str | None,
    targeting: JSON | None,
    metadata: Mapping[str, JSON],
) -> dict[str, JSON]:
    """One flag in flagd form. A missing default variant means "use the code default"."""
    flag: dict[str, JSON] = {
        "state": state,
        "variants": dict(variants),
        "defaultVariant": default_variant,
    }
    if targeting is not None and targeting != {}:
        flag["targeting"] = targeting
    if metadata:
        flag["metadata"] = dict(metadata)
    return flag


def build_flag_set(
    *,
    flag_set_id: str,
    flags: Iterable[Any],
    segments: Iterable[Any],
    bucketing: str,
) -> dict[str, JSON]:
    """The flagd document for an environment from its flag and segment rows.

    ``flags`` rows carry key, variants, metadata, state, default_variant, targeting;
    ``segments`` rows carry key and definition. Flags never configured in the
    environment (state None) are served DISABLED with the code default. ``bucketing``
    is the environment's fractional scheme; it rides in the flag set's metadata
    (``fractionalBucketing``), so every evaluator of the document buckets the same way.
    """
    doc: dict[str, JSON] = {
        "flags": {
            row["key"]: flag_definition(
                state=row["state"] or "DISABLED",
                variants=row["variants"],
                default_variant=row["default_variant"] if row["state"] else None,
                targeting=row["targeting"],
                metadata=row["metadata"],
            )
            for row in flags
        },
        "metadata": {"flagSetId": flag_set_id, "fractionalBucketing": bucketing},
    }
    evaluators = {row["key"]: row["definition"] for row in segments}
    if evaluators:
        doc["$evaluators"] = evaluators
    return doc


_ENVIRONMENT = """
SELECT e.id::text AS id, e.key, e.version, e.flags_version, e.fractional_bucketing,
       p.id::text AS project_id, p.key AS project_key,
       t.id::text AS tenant_id, t.key AS tenant_key
  FROM environments e
  JOIN projects p ON p.id = e.project_id
  JOIN tenants t ON t.id = e.tenant_id
 WHERE e.id = $1 AND e.archived_at IS NULL AND p.archived_at IS NULL
"""

_FLAGS = """
SELECT f.key, f.variants, f.metadata, fe.state, fe.default_variant, fe.targeting
  FROM flags f
  LEFT JOIN flag_environments fe ON fe.flag_id = f.id AND fe.environment_id = $2
 WHERE f.project_id = $1 AND NOT f.is_archived
 ORDER BY f.key
"""

_SEGMENTS = "SELECT key, definition FROM segments WHERE project_id = $1 ORDER BY key"

_KEYS = """
SELECT encode(key_hash, 'hex') AS key_hash, id::text AS id, kind, expires_at
  FROM api_keys
 WHERE environment_id = $1 AND revoked_at IS NULL
   AND (expires_at IS NULL OR expires_at > now())
 ORDER BY id
"""


async def set_json_codecs(conn: asyncpg.Connection) -> None:
    """Decode json/jsonb with orjson (use as a pool's ``init``)."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


async def load_snapshot(
    conn: asyncpg.Connection, environment_id: str
) -> EnvironmentSnapshot | None:
    """The environment as the edge must serve it, or None when it no longer exists or
    was deleted (archived, or in an archived project).

    The connection needs the JSON codecs of :func:`set_json_codecs`.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        env = await conn.fetchrow(_ENVIRONMENT, environment_id)
        if env is None:
            return None
        flags = await conn.fetch(_FLAGS, env["project_id"], env["id"])
        segments = await conn.fetch(_SEGMENTS, env["project_id"])
        keys = await conn.fetch(_KEYS, env["id"])
    flag_set = build_flag_set(
        flag_set_id=f"{env['project_key']}/{env['key']}",
        flags=flags,
        segments=segments,
        bucketing=env["fractional_bucketing"],
    )
    return EnvironmentSnapshot(
        environment_id=env["id"],
        environment_key=env["key"],
        project_id=env["project_id"],
        project_key=env["project_key"],
        tenant_id=env["tenant_id"],
        tenant_key=env["tenant_key"],
        version=env["version"],
        flags_version=env["flags_version"],
        flag_set=flag_set,
        keys=tuple(
            EdgeKey(k["key_hash"], k["id"], k["kind"], _epoch(k["expires_at"])) for k in keys
        ),
    )
