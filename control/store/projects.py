"""Projects and their environments."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from control.store.plans import PlanStore
from control.store.records import Environment, Project
from control.store.scope import TenantScope
from crivline.errors import Conflict, NotFound

_PROJECT_COLUMNS = "id, key, name, created_at, updated_at"
_ENVIRONMENT_COLUMNS = "id, project_id, key, name, version, created_at, updated_at"
_PROJECT = f"SELECT {_PROJECT_COLUMNS} FROM projects"
_ENVIRONMENT = f"SELECT {_ENVIRONMENT_COLUMNS} FROM environments"


class ProjectStore:
    def __init__(self, scope: TenantScope) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id

    # -- projects ------------------------------------------------------------------------

    async def all(self) -> list[Project]:
        rows = await self.conn.fetch(
            f"{_PROJECT} WHERE tenant_id = $1 ORDER BY key", self.tenant_id
        )
        return [Project.from_row(r) for r in rows]

    async def get(self, key: str, *, lock: str = "") -> Project:
        """The project, or 404. ``lock``: a row-lock clause such as ``FOR SHARE``."""
        row = await self.conn.fetchrow(
            f"{_PROJECT} WHERE tenant_id = $1 AND key = $2 {lock}", self.tenant_id, key
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
            f"{_ENVIRONMENT} WHERE tenant_id = $1 AND project_id = $2 ORDER BY key",
            self.tenant_id,
            project.id,
        )
        return [Environment.from_row(r) for r in rows]

    async def environment(self, project: Project, key: str) -> Environment:
        row = await self.conn.fetchrow(
            f"{_ENVIRONMENT} WHERE tenant_id = $1 AND project_id = $2 AND key = $3",
            self.tenant_id,
            project.id,
            key,
        )
        if row is None:
            raise NotFound(f"no environment {key!r} in project {project.key!r}")
        return Environment.from_row(row)

    async def create_environment(self, project_key: str, key: str, name: str) -> Environment:
        """A new environment, with a DISABLED state for every flag of the project.

        Locks the project row against concurrent flag creation (which holds it FOR
        SHARE), so no flag is created without a row in this environment or vice versa.
        """
        project = await self.get(project_key, lock="FOR NO KEY UPDATE")
        await PlanStore(self.scope).check_environment_room(project, datetime.now(UTC))
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO environments (tenant_id, project_id, key, name)
                   VALUES ($1, $2, $3, $4) RETURNING {_ENVIRONMENT_COLUMNS}""",
                self.tenant_id,
                project.id,
                key,
                name,
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
        env = Environment(
            env.id,
            env.project_id,
            env.key,
            env.name,
            versions[env.id],
            env.created_at,
            env.updated_at,
        )
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
