"""Flags: list, create, read, edit, archive and restore."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse, read_json
from control.http import etag, if_match, json_response, path_key, query_choice
from control.routing import Api, Reply
from control.schemas import FLAG_PATCH, NEW_FLAG
from control.store import TenantStore
from control.store.flags import ARCHIVED_FILTERS
from control.store.records import Flag
from control.tx import Outcome, reading, write
from crivline.errors import BadRequest

api = Api("/api/v1")
_FLAG = "/projects/{project}/flags/{flag}"


def _answer(flag: Flag, status: int = 200, **headers: str) -> Outcome:
    return Outcome(flag.to_api(), status, {"ETag": etag(flag.revision), **headers})


@api.operation(
    "GET", "/projects/{project}/flags", operation_id="listFlags", tag="flags",
    summary="List a project's flags", query=("archived",),
    replies=(Reply(200, "The flags, by key", "FlagList"),), problems=(400, 401, 404),
)  # fmt: skip
async def list_flags(request: web.Request) -> web.Response:
    project = path_key(request, "project")
    archived = query_choice(request, "archived", tuple(ARCHIVED_FILTERS), "false")
    async with reading(request) as store:
        flags = await store.flags.all(project, archived)
    return json_response({"items": [f.to_api() for f in flags]})


@api.operation(
    "POST", "/projects/{project}/flags", operation_id="createFlag", tag="flags",
    summary="Create a flag (DISABLED in every environment)", body=NEW_FLAG,
    headers=("IdempotencyKey",),
    replies=(Reply(201, "The new flag", "Flag", ("ETag", "Location")),),
    problems=(400, 401, 404, 409, 413, 415, 422),
)  # fmt: skip
async def create_flag(request: web.Request) -> web.Response:
    project = path_key(request, "project")
    body = await parse(request, NEW_FLAG)

    async def create(store: TenantStore) -> Outcome:
        flag = await store.flags.create(project, body)
        return _answer(flag, 201, Location=f"/api/v1/projects/{project}/flags/{flag.key}")

    return await write(request, create, idempotent=True)


@api.operation(
    "GET", _FLAG, operation_id="getFlag", tag="flags", summary="Read a flag",
    replies=(Reply(200, "The flag and its state in each environment", "Flag", ("ETag",)),),
    problems=(401, 404),
)  # fmt: skip
async def get_flag(request: web.Request) -> web.Response:
    project, key = path_key(request, "project"), path_key(request, "flag")
    async with reading(request) as store:
        flag = await store.flags.get(project, key)
    return _answer(flag).response()


@api.operation(
    "PATCH", _FLAG, operation_id="updateFlag", tag="flags",
    summary="Change a flag's name, description, variants or metadata", body=FLAG_PATCH,
    headers=("IfMatch",), replies=(Reply(200, "The flag as it is now", "Flag", ("ETag",)),),
    problems=(400, 401, 404, 412, 413, 415, 422),
)  # fmt: skip
async def update_flag(request: web.Request) -> web.Response:
    project, key = path_key(request, "project"), path_key(request, "flag")
    changes = await parse(request, FLAG_PATCH)
    precondition = if_match(request)

    async def update(store: TenantStore) -> Outcome:
        return _answer(await store.flags.update(project, key, changes, precondition))

    return await write(request, update)


async def _set_archived(request: web.Request, archived: bool) -> web.Response:
    project, key = path_key(request, "project"), path_key(request, "flag")
    if await read_json(request, optional=True) not in (None, {}):
        raise BadRequest("this operation takes no body (or an empty JSON object)")
    precondition = if_match(request)

    async def apply(store: TenantStore) -> Outcome:
        return _answer(await store.flags.set_archived(project, key, archived, precondition))

    return await write(request, apply, idempotent=True)


@api.operation(
    "POST", _FLAG + "/archive", operation_id="archiveFlag", tag="flags",
    summary="Archive a flag: it leaves every environment's flag set (restorable)",
    headers=("IfMatch", "IdempotencyKey"),
    replies=(Reply(200, "The archived flag", "Flag", ("ETag",)),),
    problems=(400, 401, 404, 412, 413, 415, 422),
)  # fmt: skip
async def archive_flag(request: web.Request) -> web.Response:
    return await _set_archived(request, True)


@api.operation(
    "POST", _FLAG + "/restore", operation_id="restoreFlag", tag="flags",
    summary="Restore an archived flag", headers=("IfMatch", "IdempotencyKey"),
    replies=(Reply(200, "The restored flag", "Flag", ("ETag",)),),
    problems=(400, 401, 404, 412, 413, 415, 422),
)  # fmt: skip
async def restore_flag(request: web.Request) -> web.Response:
    return await _set_archived(request, False)
