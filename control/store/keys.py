"""API keys of an environment: created (the secret shown once), listed, revoked."""

from __future__ import annotations

from datetime import datetime

from control.store.projects import ProjectStore
from control.store.records import ApiKey, Environment
from control.store.scope import TenantScope
from crivline import seed, tokens
from crivline.errors import NotFound

_SELECT = """
SELECT k.id, e.key AS environment_key, k.kind, k.label, k.display_prefix, k.created_at,
       k.expires_at, k.revoked_at
  FROM api_keys k JOIN environments e ON e.tenant_id = k.tenant_id AND e.id = k.environment_id
 WHERE k.tenant_id = $1 AND k.environment_id = $2
"""


class KeyStore:
    def __init__(self, scope: TenantScope, projects: ProjectStore) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id
        self.projects = projects

    async def _environment(self, project_key: str, env_key: str) -> Environment:
        project = await self.projects.get(project_key)
        return await self.projects.environment(project, env_key)

    async def all(self, project_key: str, env_key: str) -> list[ApiKey]:
        env = await self._environment(project_key, env_key)
        rows = await self.conn.fetch(
            f"{_SELECT} ORDER BY k.created_at, k.id", self.tenant_id, env.id
        )
        return [ApiKey.from_row(r) for r in rows]

    async def _get(self, env: Environment, key_id: str, lock: str = "") -> ApiKey:
        row = await self.conn.fetchrow(
            f"{_SELECT} AND k.id = $3 {lock}", self.tenant_id, env.id, key_id
        )
        if row is None:
            raise NotFound(f"no API key {key_id} in environment {env.key!r}")
        return ApiKey.from_row(row)

    async def create(
        self, project_key: str, env_key: str, kind: str, label: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str, int]:
        """A new key: its record, the secret (never stored) and the environment version."""
        env = await self._environment(project_key, env_key)
        issued = await seed.issue_api_key(
            self.conn,
            tenant_id=self.tenant_id,
            project_id=env.project_id,
            environment_id=env.id,
            kind=tokens.SecretKind(kind),
            label=label,
            actor=self.scope.actor,
            expires_at=expires_at,
        )
        self.scope.actions.append("api_key.create")
        # The edge learns the new key's hash; SDKs' flag set is as it was.
        versions = await self.scope.bump([env.id], flags=False)
        return await self._get(env, issued.id), issued.secret, versions[env.id]

    async def revoke(self, project_key: str, env_key: str, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: revoking a revoked key changes nothing)."""
        env = await self._environment(project_key, env_key)
        current = await self._get(env, key_id, "FOR UPDATE OF k")
        if current.revoked_at is not None:
            return current
        await self.conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND id = $2",
            self.tenant_id,
            key_id,
        )
        after = await self._get(env, key_id)
        # Edges drop the key and close its streams; other SDKs' flag set is as it was.
        await self.scope.bump([env.id], flags=False)
        await self.scope.audit(
            project_id=env.project_id,
            action="api_key.revoke",
            entity_type="api_key",
            entity_id=key_id,
            entity_key=after.label,
            before=current.to_api(),
            after=after.to_api(),
        )
        return after
