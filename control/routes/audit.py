"""The audit log: every change, who made it, and the object before and after."""

from __future__ import annotations

from aiohttp import web

from control.http import is_key, json_response, query_int
from control.routing import Api, Reply
from control.tx import reading
from crivline.errors import NotFound

api = Api("/api/v1")


@api.operation(
    "GET", "/audit", operation_id="listAudit", tag="audit",
    summary="Audit entries, newest first", query=("project", "limit", "cursor"),
    replies=(Reply(200, "One page of entries", "AuditPage"),), problems=(400, 401, 404),
)  # fmt: skip
async def list_audit(request: web.Request) -> web.Response:
    project = request.query.get("project")
    if project is not None and not is_key(project):
        raise NotFound(f"no project {project!r}")
    limit = query_int(request, "limit", default=50, lo=1, hi=500)
    async with reading(request) as store:
        entries, cursor = await store.audit.page(
            project_key=project, limit=limit, cursor=request.query.get("cursor")
        )
    return json_response({"items": [e.to_api() for e in entries], "nextCursor": cursor})
