"""What the store returns: one frozen record per entity, and its API form.

``to_api()`` is both the JSON a client sees and the before/after snapshot written to
the audit log, so the audit trail shows objects exactly as the API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from crivline.jsontypes import JSON


def _id(value: Any) -> str:
    return str(value)


def same_json(a: JSON, b: JSON) -> bool:
    """Equal as JSON documents. Python's ``==`` is not enough: it holds ``True == 1 ==
    1.0``, which JSONLogic (``===``) and flag types tell apart."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    key: str
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Project:
        return cls(_id(row["id"]), row["key"], row["name"], row["created_at"], row["updated_at"])

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Environment:
    id: str
    project_id: str
    key: str
    name: str
    version: int
    created_at: datetime
    updated_at: datetime
    fractional_bucketing: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Environment:
        return cls(
            _id(row["id"]),
            _id(row["project_id"]),
            row["key"],
            row["name"],
            row["version"],
            row["created_at"],
            row["updated_at"],
            row["fractional_bucketing"],
        )

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "fractionalBucketing": self.fractional_bucketing,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class FlagEnvironment:
    """A flag's state in one environment."""

    flag_id: str
    flag_key: str
    environment_id: str
    environment_key: str
    state: str
    default_variant: str | None
    targeting: JSON | None
    revision: int
    updated_at: datetime
    updated_by: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> FlagEnvironment:
        return cls(
            _id(row["flag_id"]),
            row["flag_key"],
            _id(row["environment_id"]),
            row["environment_key"],
            row["state"],
            row["default_variant"],
            row["targeting"],
            row["revision"],
            row["updated_at"],
            row["updated_by"],
        )

    def to_api(self) -> dict[str, JSON]:
        return {
            "flag": self.flag_key,
            "environment": self.environment_key,
            "state": self.state,
            "defaultVariant": self.default_variant,
            "targeting": self.targeting,
            "revision": self.revision,
            "updatedAt": self.updated_at,
            "updatedBy": self.updated_by,
        }

    def summary(self) -> dict[str, JSON]:
        """The short form listed inside a flag."""
        return {
            "state": self.state,
            "defaultVariant": self.default_variant,
            "targeting": self.targeting,
            "revision": self.revision,
        }

    def served_equal(self, state: str, default_variant: str | None, targeting: JSON) -> bool:
        return same_json(
            [self.state, self.default_variant, self.targeting],
            [state, default_variant, targeting],
        )


@dataclass(frozen=True, slots=True)
class Flag:
    id: str
    project_id: str
    key: str
    name: str
    description: str
    type: str
    variants: Mapping[str, JSON]
    metadata: Mapping[str, JSON]
    archived: bool
    revision: int
    created_at: datetime
    updated_at: datetime
    environments: Mapping[str, FlagEnvironment]

    @classmethod
    def from_row(
        cls, row: asyncpg.Record, environments: Mapping[str, FlagEnvironment] | None = None
    ) -> Flag:
        return cls(
            _id(row["id"]),
            _id(row["project_id"]),
            row["key"],
            row["name"],
            row["description"],
            row["type"],
            row["variants"],
            row["metadata"],
            row["is_archived"],
            row["revision"],
            row["created_at"],
            row["updated_at"],
            dict(environments or {}),
        )

    def with_environments(self, environments: Mapping[str, FlagEnvironment]) -> Flag:
        return replace(self, environments=dict(environments))

    def definition(self) -> dict[str, JSON]:
        """The flag-level fields (what the audit log records for a flag change)."""
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "type": self.type,
            "variants": dict(self.variants),
            "metadata": dict(self.metadata),
            "archived": self.archived,
            "revision": self.revision,
        }

    def to_api(self) -> dict[str, JSON]:
        return {
            **self.definition(),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "environments": {k: fe.summary() for k, fe in sorted(self.environments.items())},
        }


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    key: str
    definition: JSON
    revision: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Segment:
        return cls(
            _id(row["id"]),
            row["key"],
            row["definition"],
            row["revision"],
            row["created_at"],
            row["updated_at"],
        )

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "key": self.key,
            "definition": self.definition,
            "revision": self.revision,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as listed: never the secret, which exists only in the creating response."""

    id: str
    environment_key: str
    kind: str
    label: str
    display_prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ApiKey:
        return cls(
            _id(row["id"]),
            row["environment_key"],
            row["kind"],
            row["label"],
            row["display_prefix"],
            row["created_at"],
            row["expires_at"],
            row["revoked_at"],
        )

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "environment": self.environment_key,
            "kind": self.kind,
            "label": self.label,
            "displayPrefix": self.display_prefix,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    project_id: str | None
    actor: str
    action: str
    entity_type: str
    entity_id: str | None
    entity_key: str
    before: JSON
    after: JSON
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditEntry:
        project = row["project_id"]
        entity = row["entity_id"]
        return cls(
            row["id"],
            None if project is None else _id(project),
            row["actor"],
            row["action"],
            row["entity_type"],
            None if entity is None else _id(entity),
            row["entity_key"],
            row["before"],
            row["after"],
            row["created_at"],
        )

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": str(self.id),
            "projectId": self.project_id,
            "actor": self.actor,
            "action": self.action,
            "entityType": self.entity_type,
            "entityId": self.entity_id,
            "entityKey": self.entity_key,
            "before": self.before,
            "after": self.after,
            "createdAt": self.created_at,
        }
