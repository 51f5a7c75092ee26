"""Management tokens of the tenant: issued (the secret shown once), listed, revoked.

Only each token's SHA-256 is stored. A revoked token stays listed, and stops working
at once (authentication reads the database on every request).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from control.store.scope import TenantScope
from crivline import seed
from crivline.errors import Conflict, NotFound
from crivline.jsontypes import JSON

_SELECT = """
SELECT id::text AS id, label, scope, display_prefix, created_at, revoked_at
  FROM management_tokens
 WHERE tenant_id = $1
"""


@dataclass(frozen=True, slots=True)
class ManagementToken:
    id: str
    label: str
    scope: str
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ManagementToken:
        return cls(row["id"], row["label"], row["scope"], row["display_prefix"],
                   row["created_at"], row["revoked_at"])  # fmt: skip

    def to_api(self) -> dict[str, JSON]:
        return {
            "id": self.id,
            "label": self.label,
            "scope": self.scope,
            "displayPrefix": self.display_prefix,
            "createdAt": self.created_at,
            "revokedAt": self.revoked_at,
        }


class TokenStore:
    def __init__(self, scope: TenantScope) -> None:
        self.scope = scope
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id

    async def all(self) -> list[ManagementToken]:
        rows = await self.conn.fetch(f"{_SELECT} ORDER BY created_at, id", self.tenant_id)
        return [ManagementToken.from_row(r) for r in rows]

    async def _get(self, token_id: str, lock: str = "") -> ManagementToken:
        row = await self.conn.fetchrow(f"{_SELECT} AND id = $2 {lock}", self.tenant_id, token_id)
        if row is None:
            raise NotFound(f"no management token {token_id}")
        return ManagementToken.from_row(row)

    async def create(self, scope: str, label: str) -> tuple[ManagementToken, str]:
        """A new token: its record and the secret (never stored)."""
        issued = await seed.issue_token(
            self.conn, self.tenant_id, label, scope=scope, actor=self.scope.actor
        )
        self.scope.actions.append("management_token.create")
        return await self._get(issued.id), issued.secret

    async def _keep_an_admin(self, token_id: str) -> None:
        """Refuse to revoke the tenant's last live admin token: nobody could issue or
        revoke tokens (or API keys) after it. The live admin tokens are locked, in one
        order, so two revocations racing for the last two cannot both pass."""
        live = await self.conn.fetch(
            "SELECT id::text AS id FROM management_tokens"
            " WHERE tenant_id = $1 AND scope = 'admin' AND revoked_at IS NULL"
            " ORDER BY id FOR UPDATE",
            self.tenant_id,
        )
        if [row["id"] for row in live] == [token_id]:  # live, and the only one
            raise Conflict(
                f"management token {token_id} is the tenant's last admin token: issue "
                "another admin token first, or nobody could manage tokens and keys"
            )

    async def revoke(self, token_id: str) -> ManagementToken:
        """Revoke a token (idempotent: revoking a revoked token changes nothing)."""
        if (await self._get(token_id)).scope == "admin":
            await self._keep_an_admin(token_id)  # locks the admin tokens first, in order
        current = await self._get(token_id, "FOR UPDATE")
        if current.revoked_at is not None:
            return current
        await self.conn.execute(
            "UPDATE management_tokens SET revoked_at = now() WHERE tenant_id = $1 AND id = $2",
            self.tenant_id,
            token_id,
        )
        after = await self._get(token_id)
        await self.scope.audit(
            project_id=None,
            action="management_token.revoke",
            entity_type="management_token",
            entity_id=token_id,
            entity_key=after.label,
            before=current.to_api(),
            after=after.to_api(),
        )
        return after
