"""The edge's view of one environment, read from the central Postgres.

``load_snapshot`` reads, in one statement (so one consistent snapshot of the database),
the environment's version (and its flag set's version), its live flags as a flagd
flag-set document, its live API keys and the time of its last bump — so they always
belong together. ``snapshot_from_row`` and ``build_flag_set`` are the pure part: the
statement's row in, snapshot out. The control API's ``GET …/flagset``, the export and
syncd all use this module, so what control shows is exactly what an edge serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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
    # Epoch seconds of the bump that made ``version`` (0.0: not given).
    updated_at: float = 0.0

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
    flags: Iterable[Sequence[Any]],
    segments: Iterable[Sequence[Any]],
    bucketing: str,
) -> dict[str, JSON]:
    """The flagd document for an environment from its flag and segment rows.

    ``flags`` rows are (key, variants, metadata, state, default_variant, targeting);
    ``segments`` rows are (key, definition). Flags never configured in the environment
    (state None) are served DISABLED with the code default. ``bucketing`` is the
    environment's fractional scheme; it rides in the flag set's metadata
    (``fractionalBucketing``), so every evaluator of the document buckets the same way.
    """
    doc: dict[str, JSON] = {
        "flags": {
            key: flag_definition(
                state=state or "DISABLED",
                variants=variants,
                default_variant=default_variant if state else None,
                targeting=targeting,
                metadata=metadata,
            )
            for key, variants, metadata, state, default_variant, targeting in flags
        },
        "metadata": {"flagSetId": flag_set_id, "fractionalBucketing": bucketing},
    }
    evaluators = {key: definition for key, definition in segments}
    if evaluators:
        doc["$evaluators"] = evaluators
    return doc


# The whole snapshot in ONE statement: a single statement sees one consistent snapshot of
# the database even in READ COMMITTED, so the environment, its flags, segments, keys and
# bump time belong together without a transaction (one round trip, on a primary, a
# replica or a standby alike). The lists come as JSON text, one orjson parse each: cheaper
# for the reader's CPU than a row object and a jsonb decode per column per row.
_SNAPSHOT = """
SELECT e.id::text AS id, e.key, e.version, e.flags_version, e.fractional_bucketing,
       extract(epoch FROM e.updated_at)::float8 AS updated_at,
       p.id::text AS project_id, p.key AS project_key,
       t.id::text AS tenant_id, t.key AS tenant_key,
       (SELECT json_agg(json_build_array(f.key, f.variants, f.metadata, fe.state,
                                         fe.default_variant, fe.targeting) ORDER BY f.key)
          FROM flags f
          LEFT JOIN flag_environments fe ON fe.flag_id = f.id AND fe.environment_id = e.id
         WHERE f.project_id = e.project_id AND NOT f.is_archived)::text AS flags,
       (SELECT json_agg(json_build_array(s.key, s.definition) ORDER BY s.key)
          FROM segments s
         WHERE s.project_id = e.project_id)::text AS segments,
       (SELECT json_agg(json_build_array(encode(k.key_hash, 'hex'), k.id::text, k.kind,
                                         extract(epoch FROM k.expires_at))
                        ORDER BY k.id::text)
          FROM api_keys k
         WHERE k.environment_id = e.id AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now()))::text AS keys
  FROM environments e
  JOIN projects p ON p.id = e.project_id
  JOIN tenants t ON t.id = e.tenant_id
 WHERE e.id = $1 AND e.archived_at IS NULL AND p.archived_at IS NULL
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


def _rows(text: str | None) -> list[Any]:
    return orjson.loads(text) if text else []  # json_agg of no rows is NULL


def snapshot_from_row(row: Mapping[str, Any] | asyncpg.Record) -> EnvironmentSnapshot:
    """The pure part of :func:`load_snapshot`: its one statement's row → the snapshot."""
    flag_set = build_flag_set(
        flag_set_id=f"{row['project_key']}/{row['key']}",
        flags=_rows(row["flags"]),
        segments=_rows(row["segments"]),
        bucketing=row["fractional_bucketing"],
    )
    return EnvironmentSnapshot(
        environment_id=row["id"],
        environment_key=row["key"],
        project_id=row["project_id"],
        project_key=row["project_key"],
        tenant_id=row["tenant_id"],
        tenant_key=row["tenant_key"],
        version=row["version"],
        flags_version=row["flags_version"],
        flag_set=flag_set,
        keys=tuple(
            EdgeKey(key_hash, key_id, kind, None if expires is None else float(expires))
            for key_hash, key_id, kind, expires in _rows(row["keys"])
        ),
        updated_at=row["updated_at"],
    )


async def load_snapshot(
    conn: asyncpg.Connection, environment_id: str
) -> EnvironmentSnapshot | None:
    """The environment as the edge must serve it, or None when it no longer exists or
    was deleted (archived, or in an archived project). One statement, one round trip."""
    row = await conn.fetchrow(_SNAPSHOT, environment_id)
    return None if row is None else snapshot_from_row(row)
