"""The tenant scope every data-access object is built on.

A :class:`TenantScope` binds one connection (inside one transaction) to one tenant and
one actor. Store classes take a scope, never a bare connection, and every statement they
run filters on ``scope.tenant_id``: request handling has no way to query across tenants.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from crivline import seed


@dataclass(frozen=True, slots=True)
class Change:
    """One environment version bump, as ``crivline_bump_environment`` announced it."""

    environment_id: str
    version: int
    tenant_id: str
    project_id: str
    at: float
    traceparent: str | None = None  # the write's trace context, when it was traced

    def payload(self) -> bytes:
        """The pg_notify payload (DESIGN §4): ``{"e", "v", "t", "p", "at"}``, plus
        ``"tp"`` (the W3C traceparent of the write) when the write was traced."""
        doc: dict[str, str | int | float] = {
            "e": self.environment_id,
            "v": self.version,
            "t": self.tenant_id,
            "p": self.project_id,
            "at": self.at,
        }
        if self.traceparent is not None:
            doc["tp"] = self.traceparent
        return orjson.dumps(doc)


# Bumps and reads back what the notification carried (``at`` is taken right after the
# bump, in the same transaction, so it differs from the NOTIFY's by microseconds). $3 is
# the write's traceparent, or NULL; $4 whether the write changed the flag set.
_BUMP = """
SELECT crivline_bump_environment(e.id, $3::text, $4::boolean) AS version, e.id::text AS id,
       e.project_id::text AS project_id, extract(epoch FROM clock_timestamp())::float8 AS at
  FROM environments e
 WHERE e.tenant_id = $1 AND e.id = $2
"""

# A transaction that bumped an environment for its keys and then changes its flag set:
# the flag set's version becomes the one bump's version (one bump per transaction).
_FLAGS_CHANGED = """
UPDATE environments SET flags_version = version WHERE tenant_id = $1 AND id = $2
"""


@dataclass(slots=True)
class TenantScope:
    conn: asyncpg.Connection
    tenant_id: str
    actor: str
    # The W3C traceparent of the write's span: every bump carries it to the edges.
    traceparent: str | None = None
    changes: list[Change] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    # Environments this transaction bumped without changing their flag set (yet).
    keys_only: set[str] = field(default_factory=set)

    async def bump(self, environment_ids: Iterable[str], *, flags: bool = True) -> dict[str, int]:
        """Bump each environment once per transaction, in id order; returns new versions.

        ``flags``: whether the write changed what SDKs are served (flags, segments, the
        flag set's metadata, the bucketing scheme). A write that changes only what the
        edge enforces — API keys, the plan — passes False: the version moves (the edges
        need the keys and the plan) but the flag set's version does not, so pollers keep
        their ETag and streams are sent nothing. When unsure, True: SDKs then refetch the
        same bytes, never keep an old flag set.

        Always in id order, after every other lock the write takes: two writers that
        bump overlapping environments then queue instead of deadlocking.
        """
        bumped = {c.environment_id: c.version for c in self.changes}
        wanted = set(environment_ids)
        if flags:
            for env_id in sorted(wanted & self.keys_only):
                await self.conn.execute(_FLAGS_CHANGED, self.tenant_id, env_id)
                self.keys_only.discard(env_id)
        for env_id in sorted(wanted - set(bumped)):
            row = await self.conn.fetchrow(_BUMP, self.tenant_id, env_id, self.traceparent, flags)
            if row is None:
                raise LookupError(f"environment {env_id} is not in this tenant")
            change = Change(
                row["id"],
                row["version"],
                self.tenant_id,
                row["project_id"],
                row["at"],
                self.traceparent,
            )
            self.changes.append(change)
            if not flags:
                self.keys_only.add(env_id)
            bumped[env_id] = change.version
        return bumped

    async def audit(
        self,
        *,
        project_id: str | None,
        action: str,
        entity_type: str,
        entity_id: str | None,
        entity_key: str,
        before: Any,
        after: Any,
    ) -> None:
        """One audit row for one change, in the write's transaction."""
        self.actions.append(action)
        await seed.audit(
            self.conn,
            tenant_id=self.tenant_id,
            project_id=project_id,
            actor=self.actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            entity_key=entity_key,
            before=before,
            after=after,
        )
