"""An environment's whole flag set: read exactly as the edge serves it, or import one."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse
from control.http import etag, if_none_match, path_key, query_choice
from control.routing import Api, Reply
from control.schemas import FLAG_SET_DOCUMENT
from control.store import TenantStore
from control.tx import Outcome, reading, write
from crivline.errors import NotFound
from crivline.snapshot import load_snapshot

api = Api("/api/v1")
_ENV = "/projects/{project}/environments/{environment}"
VERSION_HEADER = "Crivline-Version"
FLAGS_VERSION_HEADER = "Crivline-Flags-Version"
_VERSION_HEADERS = ("ETag", VERSION_HEADER, FLAGS_VERSION_HEADER)


@api.operation(
    "GET", _ENV + "/flagset", operation_id="getFlagSet", tag="flag sets",
    summary="The environment's flag set, byte for byte as the edge serves it",
    headers=("IfNoneMatch",),
    replies=(Reply(200, "The flagd document", "FlagSet", _VERSION_HEADERS),
             Reply(304, "Unchanged since the ETag given", None, _VERSION_HEADERS,
                   media_type="")),
    problems=(401, 404),
)  # fmt: skip
async def get_flag_set(request: web.Request) -> web.Response:
    project_key, env_key = path_key(request, "project"), path_key(request, "environment")
    async with reading(request) as store:
        project = await store.projects.get(project_key)
        env = await store.projects.environment(project, env_key)
        # The same function syncd uses: what this shows is what the edge serves.
        snapshot = await load_snapshot(store.scope.conn, env.id)
    if snapshot is None:  # deleted between the two reads
        raise NotFound(f"no environment {env_key!r} in project {project_key!r}")
    tag = etag(snapshot.version)
    headers = {
        "ETag": tag,
        VERSION_HEADER: str(snapshot.version),
        FLAGS_VERSION_HEADER: str(snapshot.served_version),
    }
    if if_none_match(request, tag):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=snapshot.flag_set_bytes(), content_type="application/json", headers=headers
    )


@api.operation(
    "POST", _ENV + "/import", operation_id="importFlagSet", tag="flag sets",
    summary="Load a flagd flag-set document into this environment, in one transaction",
    body=FLAG_SET_DOCUMENT, headers=("IdempotencyKey",), query=("projectChanges",),
    replies=(Reply(200, "What the import created and changed", "ImportReport"),),
    problems=(400, 401, 404, 409, 413, 415, 422),
)  # fmt: skip
async def import_flag_set(request: web.Request) -> web.Response:
    project, env = path_key(request, "project"), path_key(request, "environment")
    apply = query_choice(request, "projectChanges", ("refuse", "apply"), "refuse") == "apply"
    document = await parse(request, FLAG_SET_DOCUMENT)

    async def run(store: TenantStore) -> Outcome:
        report = await store.importer.run(project, env, document, apply_project_changes=apply)
        return Outcome(report.to_api())

    return await write(request, run, idempotent=True)
