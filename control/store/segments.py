"""Segments: a project's shared targeting fragments (flagd ``$evaluators``).

Segment writes lock the project row (FOR NO KEY UPDATE), so they run one at a time per
project: a segment that gains a ``$ref`` and the deletion of the segment it names
cannot pass each other. Writers of flag states hold the segment rows FOR SHARE, so a
segment cannot be deleted while a flag state that names it is being written.
"""

from __future__ import annotations

from typing import Any

from control.http import Precondition
from control.store.projects import ProjectStore
from control.store.records import Project, Segment, same_json
from control.store.scope import TenantScope
from control.validation import (
    dependent_flag_problems,
    refuse,
    segment_problems,
    segment_refs,
)
from crivline.errors import Conflict, NotFound

_COLUMNS = "id, key, definition, revision, created_at, updated_at"


class SegmentStore:
    def __init__(self, scope: TenantScope, projects: ProjectStore) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id
        self.projects = projects

    async def definitions(self, project: Project, lock: str = "") -> dict[str, Any]:
        """Every segment of the project, by key: what ``$ref``s may name."""
        rows = await self.conn.fetch(
            f"""SELECT key, definition FROM segments
                 WHERE tenant_id = $1 AND project_id = $2 ORDER BY key {lock}""",
            self.tenant_id,
            project.id,
        )
        return {r["key"]: r["definition"] for r in rows}

    async def all(self, project_key: str) -> list[Segment]:
        project = await self.projects.get(project_key)
        rows = await self.conn.fetch(
            f"SELECT {_COLUMNS} FROM segments WHERE tenant_id = $1 AND project_id = $2"
            " ORDER BY key",
            self.tenant_id,
            project.id,
        )
        return [Segment.from_row(r) for r in rows]

    async def _find(self, project: Project, key: str, lock: str = "") -> Segment | None:
        row = await self.conn.fetchrow(
            f"""SELECT {_COLUMNS} FROM segments
                 WHERE tenant_id = $1 AND project_id = $2 AND key = $3 {lock}""",
            self.tenant_id,
            project.id,
            key,
        )
        return None if row is None else Segment.from_row(row)

    async def get(self, project_key: str, key: str) -> Segment:
        project = await self.projects.get(project_key)
        segment = await self._find(project, key)
        if segment is None:
            raise NotFound(f"no segment {key!r} in project {project.key!r}")
        return segment

    async def put(
        self, project_key: str, key: str, definition: Any, precondition: Precondition | None
    ) -> tuple[Segment, bool]:
        """Create or replace a segment; returns it and whether it was created."""
        project = await self.projects.get(project_key, lock="FOR NO KEY UPDATE")
        current = await self._find(project, key, "FOR UPDATE")
        if precondition is not None:
            precondition.check(None if current is None else current.revision, f"segment {key!r}")
        if current is not None and same_json(current.definition, definition):
            return current, False
        others = await self.definitions(project)
        others.pop(key, None)
        refuse(segment_problems(key, definition, others), f"segment {key!r}")
        # The flags that use it are compiled with it at the edge: each must stay in bounds.
        targetings = await self._targetings(project)
        refuse(
            dependent_flag_problems(key, targetings, {**others, key: definition}),
            f"segment {key!r}",
        )
        segment, created = await self.write(project, key, definition, current)
        await self.scope.bump(await self._environment_ids(project))
        return segment, created

    async def write(
        self, project: Project, key: str, definition: Any, current: Segment | None = None
    ) -> tuple[Segment, bool]:
        """Create or replace a segment and audit it (no checks, no bump: the caller's)."""
        if current is None:
            current = await self._find(project, key, "FOR UPDATE")
        if current is None:
            row = await self.conn.fetchrow(
                f"""INSERT INTO segments (tenant_id, project_id, key, definition)
                    VALUES ($1, $2, $3, $4::jsonb) RETURNING {_COLUMNS}""",
                self.tenant_id,
                project.id,
                key,
                definition,
            )
        else:
            row = await self.conn.fetchrow(
                f"""UPDATE segments SET definition = $3::jsonb, revision = revision + 1,
                                        updated_at = now()
                     WHERE tenant_id = $1 AND id = $2 RETURNING {_COLUMNS}""",
                self.tenant_id,
                current.id,
                definition,
            )
        assert row is not None
        after = Segment.from_row(row)
        await self.scope.audit(
            project_id=project.id,
            action="segment.update" if current else "segment.create",
            entity_type="segment",
            entity_id=after.id,
            entity_key=key,
            before=None if current is None else current.to_api(),
            after=after.to_api(),
        )
        return after, current is None

    async def delete(self, project_key: str, key: str, precondition: Precondition | None) -> None:
        """Delete a segment nothing refers to (409 naming the referrers otherwise)."""
        project = await self.projects.get(project_key, lock="FOR NO KEY UPDATE")
        current = await self._find(project, key, "FOR UPDATE")
        if current is None:
            raise NotFound(f"no segment {key!r} in project {project.key!r}")
        if precondition is not None:
            precondition.check(current.revision, f"segment {key!r}")
        users = await self._referrers(project, key)
        if users:
            shown = ", ".join(users[:10]) + (
                f" and {len(users) - 10} more" if len(users) > 10 else ""
            )
            raise Conflict(
                f"segment {key!r} is still referenced by {shown}; remove those $refs first",
                extra={"referencedBy": users},
            )
        await self.conn.execute(
            "DELETE FROM segments WHERE tenant_id = $1 AND id = $2", self.tenant_id, current.id
        )
        await self.scope.audit(
            project_id=project.id,
            action="segment.delete",
            entity_type="segment",
            entity_id=current.id,
            entity_key=key,
            before=current.to_api(),
            after=None,
        )
        await self.scope.bump(await self._environment_ids(project))

    async def _referrers(self, project: Project, key: str) -> list[str]:
        """Flag states (archived flags too: they may be restored) and segments naming key."""
        found: list[str] = []
        rows = await self.conn.fetch(
            """SELECT f.key AS flag, e.key AS environment, fe.targeting
                 FROM flag_environments fe
                 JOIN flags f ON f.tenant_id = fe.tenant_id AND f.id = fe.flag_id
                 JOIN environments e ON e.tenant_id = fe.tenant_id AND e.id = fe.environment_id
                WHERE fe.tenant_id = $1 AND fe.project_id = $2 AND fe.targeting IS NOT NULL
                  AND e.archived_at IS NULL
                ORDER BY f.key, e.key""",
            self.tenant_id,
            project.id,
        )
        found += [
            f"flag {r['flag']} in {r['environment']}"
            for r in rows
            if key in segment_refs(r["targeting"])
        ]
        for name, definition in (await self.definitions(project)).items():
            if name != key and key in segment_refs(definition):
                found.append(f"segment {name}")
        return found

    async def _targetings(self, project: Project) -> list[tuple[str, str, Any]]:
        """(flag, environment, targeting) of every live flag state with targeting."""
        rows = await self.conn.fetch(
            """SELECT f.key AS flag, e.key AS env, fe.targeting
                 FROM flag_environments fe
                 JOIN flags f ON f.tenant_id = fe.tenant_id AND f.id = fe.flag_id
                 JOIN environments e ON e.tenant_id = fe.tenant_id AND e.id = fe.environment_id
                WHERE fe.tenant_id = $1 AND fe.project_id = $2 AND fe.targeting IS NOT NULL
                  AND e.archived_at IS NULL
                  AND NOT f.is_archived
                ORDER BY f.key, e.key""",
            self.tenant_id,
            project.id,
        )
        return [(r["flag"], r["env"], r["targeting"]) for r in rows]

    async def _environment_ids(self, project: Project) -> list[str]:
        # Every environment of the project serves the project's segments.
        return [env.id for env in await self.projects.environments(project)]
