"""Projects and their environments."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg

from control.store.plans import PlanStore
from control.store.records import ApiKey, Environment, Project
from control.store.scope import TenantScope
from crivline.errors import Conflict, NotFound
from crivline.flags.fractional import CURRENT_SCHEME

_PROJECT_COLUMNS = "id, key, name, created_at, updated_at"
_ENVIRONMENT_COLUMNS = (
    "id, project_id, key, name, version, created_at, updated_at, fractional_bucketing"
)
# Live rows only: a deleted (archived) project or environment is in no answer.
_PROJECT = f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE archived_at IS NULL"
_ENVIRONMENT = f"SELECT {_ENVIRONMENT_COLUMNS} FROM environments WHERE archived_at IS NULL"
# The keys a deletion takes: every live key of the environments, revoked with them.
_TAKE_KEYS = """
UPDATE api_keys k SET revoked_at = now()
  FROM environments e
 WHERE k.tenant_id = $1 AND k.environment_id = ANY($2::uuid[]) AND k.revoked_at IS NULL
   AND e.tenant_id = k.tenant_id AND e.id = k.environment_id
RETURNING k.id, e.key AS environment_key, k.kind, k.label, k.display_prefix, k.created_at,
          k.expires_at, k.revoked_at
"""


class ProjectStore:
    def __init__(self, scope: TenantScope) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id

    # -- projects ------------------------------------------------------------------------

    async def all(self) -> list[Project]:
        rows = await self.conn.fetch(f"{_PROJECT} AND tenant_id = $1 ORDER BY key", self.tenant_id)
        return [Project.from_row(r) for r in rows]

    async def get(self, key: str, *, lock: str = "") -> Project:
        """The project, or 404. ``lock``: a row-lock clause such as ``FOR SHARE``."""
        row = await self.conn.fetchrow(
            f"{_PROJECT} AND tenant_id = $1 AND key = $2 {lock}", self.tenant_id, key
        )
        if row is None:
            raise NotFound(f"no project {key!r}")
        return Project.from_row(row)

    async def create(self, key: str, name: str) -> Project:
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO projects (tenant_id, key, name) VALUES ($1, $2, $3)
                    RETURNING {_PROJECT_COLUMNS}""",
                self.tenant_id,
                key,
                name,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a project with key {key!r} already exists") from None
        assert row is not None
        project = Project.from_row(row)
        await self.scope.audit(
            project_id=project.id,
            action="project.create",
            entity_type="project",
            entity_id=project.id,
            entity_key=key,
            before=None,
            after=project.to_api(),
        )
        return project

    # -- environments --------------------------------------------------------------------

    async def environments(self, project: Project) -> list[Environment]:
        rows = await self.conn.fetch(
            f"{_ENVIRONMENT} AND tenant_id = $1 AND project_id = $2 ORDER BY key",
            self.tenant_id,
            project.id,
        )
        return [Environment.from_row(r) for r in rows]

    async def update(self, key: str, changes: dict[str, str]) -> Project:
        """Rename a project (its display name; the key stays). Audited; no environment
        moves: the name is in no flag set."""
        current = await self.get(key, lock="FOR NO KEY UPDATE")
        name = changes.get("name", current.name)
        if name == current.name:
            return current
        row = await self.conn.fetchrow(
            f"""UPDATE projects SET name = $3, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {_PROJECT_COLUMNS}""",
            self.tenant_id,
            current.id,
            name,
        )
        assert row is not None
        after = Project.from_row(row)
        await self.scope.audit(
            project_id=current.id,
            action="project.update",
            entity_type="project",
            entity_id=current.id,
            entity_key=key,
            before=current.to_api(),
            after=after.to_api(),
        )
        return after

    async def update_environment(
        self, project_key: str, key: str, changes: dict[str, str]
    ) -> Environment:
        """Rename an environment or change its fractional bucketing scheme. Audited; the
        environment's version moves only when its flag set changes (the scheme is in its
        metadata), so a rename reaches no edge."""
        project = await self.get(project_key)
        current = await self.environment(project, key, lock="FOR NO KEY UPDATE")
        name = changes.get("name", current.name)
        bucketing = changes.get("fractionalBucketing", current.fractional_bucketing)
        if (name, bucketing) == (current.name, current.fractional_bucketing):
            return current
        row = await self.conn.fetchrow(
            f"""UPDATE environments SET name = $3, fractional_bucketing = $4, updated_at = now()
                 WHERE tenant_id = $1 AND id = $2 RETURNING {_ENVIRONMENT_COLUMNS}""",
            self.tenant_id,
            current.id,
            name,
            bucketing,
        )
        assert row is not None
        after = Environment.from_row(row)
        if bucketing != current.fractional_bucketing:
            versions = await self.scope.bump([after.id])
            after = dataclasses.replace(after, version=versions[after.id])
        await self.scope.audit(
            project_id=project.id,
            action="environment.update",
            entity_type="environment",
            entity_id=current.id,
            entity_key=key,
            before=current.to_api(),
            after=after.to_api(),
        )
        return after

    async def environment(self, project: Project, key: str, *, lock: str = "") -> Environment:
        row = await self.conn.fetchrow(
            f"{_ENVIRONMENT} AND tenant_id = $1 AND project_id = $2 AND key = $3 {lock}",
            self.tenant_id,
            project.id,
            key,
        )
        if row is None:
            raise NotFound(f"no environment {key!r} in project {project.key!r}")
        return Environment.from_row(row)

    async def create_environment(
        self, project_key: str, key: str, name: str, bucketing: str | None = None
    ) -> Environment:
        """A new environment, with a DISABLED state for every flag of the project.

        ``bucketing`` is its fractional scheme, by default flagd's current one (v3).

        Locks the project row against concurrent flag creation (which holds it FOR
        SHARE), so no flag is created without a row in this environment or vice versa.
        """
        project = await self.get(project_key, lock="FOR NO KEY UPDATE")
        await PlanStore(self.scope).check_environment_room(project, datetime.now(UTC))
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO environments (tenant_id, project_id, key, name,
                                             fractional_bucketing)
                   VALUES ($1, $2, $3, $4, $5)
                   RETURNING {_ENVIRONMENT_COLUMNS}""",
                self.tenant_id,
                project.id,
                key,
                name,
                bucketing or CURRENT_SCHEME,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an environment with key {key!r} already exists in project {project.key!r}"
            ) from None
        assert row is not None
        env = Environment.from_row(row)
        # New environments start with every flag off and no default of their own: the
        # "use the code default" answer, until someone configures the flag there.
        await self.conn.execute(
            """INSERT INTO flag_environments (tenant_id, project_id, flag_id, environment_id,
                                              state, updated_by)
               SELECT $1, $2, f.id, $3, 'DISABLED', $4
                 FROM flags f WHERE f.tenant_id = $1 AND f.project_id = $2""",
            self.tenant_id,
            project.id,
            env.id,
            self.scope.actor,
        )
        versions = await self.scope.bump([env.id])
        env = dataclasses.replace(env, version=versions[env.id])
        await self.scope.audit(
            project_id=project.id,
            action="environment.create",
            entity_type="environment",
            entity_id=env.id,
            entity_key=key,
            before=None,
            after=env.to_api(),
        )
        return env

    # -- deletion (archiving) ---------------------------------------------------------------

    async def delete(self, key: str) -> Deleted:
        """Delete (archive) a project with its environments and their live keys. Audited;
        every environment's version moves, so each edge's syncd wakes, finds it gone and
        drops it (its keys stop working, its open streams close)."""
        project = await self.get(key, lock="FOR NO KEY UPDATE")
        environments = await self.environments(project)
        taken = await self._take(project, environments)
        await self.conn.execute(
            "UPDATE projects SET archived_at = now() WHERE tenant_id = $1 AND id = $2",
            self.tenant_id,
            project.id,
        )
        await self.scope.audit(
            project_id=project.id,
            action="project.delete",
            entity_type="project",
            entity_id=project.id,
            entity_key=key,
            # A deletion's row says what was there, what went with it, and no "after".
            before={**project.to_api(), "deleted": taken.to_api()},
            after=None,
        )
        return taken

    async def delete_environment(self, project_key: str, key: str) -> Deleted:
        """Delete (archive) one environment and its live keys. Audited; its version moves
        so the edges drop it."""
        project = await self.get(project_key, lock="FOR NO KEY UPDATE")
        env = await self.environment(project, key)
        taken = await self._take(project, [env])
        await self.scope.audit(
            project_id=project.id,
            action="environment.delete",
            entity_type="environment",
            entity_id=env.id,
            entity_key=key,
            before={**env.to_api(), "deleted": taken.to_api()},
            after=None,
        )
        return taken

    async def _take(self, project: Project, environments: list[Environment]) -> Deleted:
        """Bump, revoke the keys of and archive ``environments``. The bump comes first: it
        locks the rows in id order, like every writer, before they are updated."""
        ids = [env.id for env in environments]
        await self.scope.bump(ids)
        rows = await self.conn.fetch(_TAKE_KEYS, self.tenant_id, ids)
        await self.conn.execute(
            """UPDATE environments SET archived_at = now()
                WHERE tenant_id = $1 AND id = ANY($2::uuid[])""",
            self.tenant_id,
            ids,
        )
        keys = sorted((ApiKey.from_row(r) for r in rows), key=lambda k: (k.environment_key, k.id))
        return Deleted(project.key, [env.key for env in environments], keys)


@dataclasses.dataclass(frozen=True, slots=True)
class Deleted:
    """What a deletion took: the project, the environments and the keys revoked with them."""

    project: str
    environments: list[str]
    keys: list[ApiKey]

    def to_api(self) -> dict[str, object]:
        return {
            "project": self.project,
            "environments": list(self.environments),
            "keys": [key.to_api() for key in self.keys],
        }
