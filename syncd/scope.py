"""Which environments this edge serves: all, or those matching tenant/project/environment keys.

Filters are keys (slugs) and are ANDed. A project key is unique only within its tenant
and an environment key only within its project, so ``--environment production`` alone
serves every tenant's production environments, and ``--project web`` alone every
tenant's ``web`` project.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str | None = None
    project: str | None = None
    environment: str | None = None

    @property
    def everything(self) -> bool:
        return self.tenant is None and self.project is None and self.environment is None

    def matches(self, tenant_key: str, project_key: str, environment_key: str) -> bool:
        return (
            (self.tenant is None or self.tenant == tenant_key)
            and (self.project is None or self.project == project_key)
            and (self.environment is None or self.environment == environment_key)
        )

    def describe(self) -> str:
        if self.everything:
            return "all environments"
        parts = [
            f"{name}={value}"
            for name, value in (
                ("tenant", self.tenant),
                ("project", self.project),
                ("environment", self.environment),
            )
            if value is not None
        ]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ScopedEnvironment:
    """One environment in scope, as reconciliation sees it."""

    id: str
    version: int
    updated_at: float  # epoch seconds of the last bump
    tenant_id: str
    project_id: str


_IN_SCOPE = """
SELECT e.id::text AS id, e.version, extract(epoch FROM e.updated_at)::float8 AS updated_at,
       e.tenant_id::text AS tenant_id, e.project_id::text AS project_id
  FROM environments e
  JOIN projects p ON p.id = e.project_id
  JOIN tenants t ON t.id = e.tenant_id
 WHERE e.archived_at IS NULL AND p.archived_at IS NULL
   AND ($1::text IS NULL OR t.key = $1)
   AND ($2::text IS NULL OR p.key = $2)
   AND ($3::text IS NULL OR e.key = $3)
   AND ($4::uuid[] IS NULL OR e.id = ANY($4::uuid[]))
"""


async def environments_in_scope(
    conn: asyncpg.Connection | asyncpg.Pool,
    scope: Scope,
    only: list[str] | None = None,
) -> dict[str, ScopedEnvironment]:
    """Every environment in ``scope`` (restricted to the ids ``only``, when given)."""
    rows = await conn.fetch(_IN_SCOPE, scope.tenant, scope.project, scope.environment, only)
    return {
        row["id"]: ScopedEnvironment(
            row["id"], row["version"], row["updated_at"], row["tenant_id"], row["project_id"]
        )
        for row in rows
    }


_TENANTS = "SELECT id::text FROM tenants WHERE key = $1"
_PROJECTS = """
SELECT p.id::text FROM projects p JOIN tenants t ON t.id = p.tenant_id
 WHERE ($1::text IS NULL OR t.key = $1) AND p.key = $2 AND p.archived_at IS NULL
"""


async def scope_owners(
    conn: asyncpg.Connection | asyncpg.Pool, scope: Scope
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """Ids of the tenants and projects the scope's filters name (None: not filtered)."""
    tenants = projects = None
    if scope.tenant is not None:
        tenants = frozenset(r[0] for r in await conn.fetch(_TENANTS, scope.tenant))
    if scope.project is not None:
        projects = frozenset(r[0] for r in await conn.fetch(_PROJECTS, scope.tenant, scope.project))
    return tenants, projects


class ScopeView:
    """What syncd knows of its scope between reconciliations: a cheap filter for wake-ups.

    A notification names (environment, tenant, project) by id. One for an environment we
    serve is always taken. One for an unknown environment is taken unless its tenant or
    project is one the filters exclude, or a rebuild already found it out of scope; the
    rebuild then checks the environment against the filters for real. Refreshed at every
    reconciliation, so a tenant or project created meanwhile is picked up by the next one.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.environments: frozenset[str] = frozenset()
        self.tenants: frozenset[str] | None = None
        self.projects: frozenset[str] | None = None
        self.outside: set[str] = set()

    def refresh(
        self,
        environments: frozenset[str],
        tenants: frozenset[str] | None,
        projects: frozenset[str] | None,
    ) -> None:
        self.environments = environments
        self.tenants = tenants
        self.projects = projects
        self.outside = set()

    def admits(self, environment: str, tenant: str | None, project: str | None) -> bool:
        if self.scope.everything or environment in self.environments:
            return True
        if environment in self.outside:
            return False
        if self.tenants is not None and tenant is not None and tenant not in self.tenants:
            return False
        return not (
            self.projects is not None and project is not None and project not in self.projects
        )
