"""Reading the audit log: newest first, in pages addressed by an opaque cursor.

The cursor is the (created_at, id) of the last entry of a page, so a page is one index
range scan however deep into the log it is. It is meant for people paging through
history, not for replication: an entry whose transaction commits late can land behind
a cursor already handed out.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import orjson

from control.store.projects import ProjectStore
from control.store.records import AuditEntry
from control.store.scope import TenantScope
from crivline.errors import BadRequest

_COLUMNS = """id, project_id, actor, action, entity_type, entity_id, entity_key, before, after,
              created_at"""


def encode_cursor(entry: AuditEntry) -> str:
    raw = orjson.dumps([entry.created_at.isoformat(), entry.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, entry_id = orjson.loads(raw)
        at = datetime.fromisoformat(created)
        if type(entry_id) is not int or not 0 < entry_id < 2**63 or at.tzinfo is None:
            raise ValueError
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest("the cursor is not one this API handed out") from None
    return at, entry_id


class AuditStore:
    def __init__(self, scope: TenantScope, projects: ProjectStore) -> None:
        self.conn = scope.conn
        self.tenant_id = scope.tenant_id
        self.projects = projects

    async def page(
        self, *, project_key: str | None, limit: int, cursor: str | None
    ) -> tuple[list[AuditEntry], str | None]:
        """Up to ``limit`` entries after ``cursor``, and the cursor of the next page."""
        conditions = ["tenant_id = $1"]
        args: list[object] = [self.tenant_id]
        if project_key is not None:
            project = await self.projects.get(project_key)
            args.append(project.id)
            conditions.append(f"project_id = ${len(args)}")
        if cursor is not None:
            at, entry_id = decode_cursor(cursor)
            args += [at, entry_id]
            conditions.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        rows = await self.conn.fetch(
            f"""SELECT {_COLUMNS} FROM audit_log WHERE {" AND ".join(conditions)}
                 ORDER BY created_at DESC, id DESC LIMIT ${len(args)}""",
            *args,
        )
        entries = [AuditEntry.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return entries, encode_cursor(entries[-1]) if more else None
