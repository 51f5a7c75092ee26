"""Segments: shared targeting rules (flagd ``$evaluators``) that flags name by ``$ref``."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse
from control.http import etag, if_match, json_response, path_key
from control.routing import Api, Reply
from control.schemas import SEGMENT
from control.store import TenantStore
from control.tx import Outcome, reading, write

api = Api("/api/v1")
_SEGMENT = "/projects/{project}/segments/{segment}"


@api.operation(
    "GET", "/projects/{project}/segments", operation_id="listSegments", tag="segments",
    summary="List a project's segments",
    replies=(Reply(200, "The segments, by key", "SegmentList"),), problems=(401, 404),
)  # fmt: skip
async def list_segments(request: web.Request) -> web.Response:
    project = path_key(request, "project")
    async with reading(request) as store:
        segments = await store.segments.all(project)
    return json_response({"items": [s.to_api() for s in segments]})


@api.operation(
    "GET", _SEGMENT, operation_id="getSegment", tag="segments", summary="Read a segment",
    replies=(Reply(200, "The segment", "Segment", ("ETag",)),), problems=(401, 404),
)  # fmt: skip
async def get_segment(request: web.Request) -> web.Response:
    project, key = path_key(request, "project"), path_key(request, "segment")
    async with reading(request) as store:
        segment = await store.segments.get(project, key)
    return json_response(segment.to_api(), headers={"ETag": etag(segment.revision)})


@api.operation(
    "PUT", _SEGMENT, operation_id="putSegment", tag="segments",
    summary="Create or replace a segment", body=SEGMENT, headers=("IfMatch",),
    replies=(Reply(200, "The replaced segment", "Segment", ("ETag",)),
             Reply(201, "The new segment", "Segment", ("ETag",))),
    problems=(400, 401, 404, 412, 413, 415, 422),
)  # fmt: skip
async def put_segment(request: web.Request) -> web.Response:
    project, key = path_key(request, "project"), path_key(request, "segment")
    body = await parse(request, SEGMENT)
    precondition = if_match(request)

    async def put(store: TenantStore) -> Outcome:
        segment, created = await store.segments.put(project, key, body["definition"], precondition)
        return Outcome(segment.to_api(), 201 if created else 200, {"ETag": etag(segment.revision)})

    return await write(request, put)


@api.operation(
    "DELETE", _SEGMENT, operation_id="deleteSegment", tag="segments",
    summary="Delete a segment that no flag or segment refers to", headers=("IfMatch",),
    replies=(Reply(204, "Deleted", media_type=""),), problems=(400, 401, 404, 409, 412),
)  # fmt: skip
async def delete_segment(request: web.Request) -> web.StreamResponse:
    project, key = path_key(request, "project"), path_key(request, "segment")
    precondition = if_match(request)

    async def delete(store: TenantStore) -> Outcome:
        await store.segments.delete(project, key, precondition)
        return Outcome(None, 204)

    return await write(request, delete)
