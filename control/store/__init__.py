"""The data-access layer: everything control reads and writes, scoped to one tenant.

``TenantStore(conn, tenant_id, actor)`` is the only way request handling reaches the
database. Each part (projects, flags, segments, keys, audit, import) is built on the
same :class:`TenantScope`, and every statement filters on its tenant id: an object of
another tenant is indistinguishable from one that does not exist.

Writes are meant to run inside one transaction (see :mod:`control.tx`); ``changes``
then lists the environment versions the transaction bumped, for the bus.
"""

from __future__ import annotations

import asyncpg

from control.store.audit import AuditStore
from control.store.flags import FlagStore
from control.store.importer import Importer, ImportReport
from control.store.keys import KeyStore
from control.store.plans import PlanStore
from control.store.projects import ProjectStore
from control.store.scope import Change, TenantScope
from control.store.segments import SegmentStore
from control.store.tokens import TokenStore

__all__ = ["Change", "ImportReport", "TenantStore"]


class TenantStore:
    def __init__(
        self, conn: asyncpg.Connection, tenant_id: str, actor: str, traceparent: str | None = None
    ) -> None:
        self.scope = TenantScope(conn, tenant_id, actor, traceparent)
        self.projects = ProjectStore(self.scope)
        self.segments = SegmentStore(self.scope, self.projects)
        self.flags = FlagStore(self.scope, self.projects, self.segments)
        self.keys = KeyStore(self.scope, self.projects)
        self.audit = AuditStore(self.scope, self.projects)
        self.plans = PlanStore(self.scope)
        self.tokens = TokenStore(self.scope)
        self.importer = Importer(self.scope, self.projects, self.flags, self.segments)

    @property
    def changes(self) -> list[Change]:
        return self.scope.changes

    @property
    def actions(self) -> list[str]:
        return self.scope.actions
