"""A flag's state in one environment: what that environment's edge serves for it."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse
from control.http import etag, if_match, path_key
from control.routing import Api, Reply
from control.schemas import FLAG_STATE
from control.store import TenantStore
from control.store.records import FlagEnvironment
from control.tx import Outcome, reading, write

api = Api("/api/v1")
_STATE = "/projects/{project}/flags/{flag}/environments/{environment}"


def _answer(state: FlagEnvironment, version: int) -> Outcome:
    body = {**state.to_api(), "environmentVersion": version}
    return Outcome(body, 200, {"ETag": etag(state.revision)})


@api.operation(
    "GET", _STATE, operation_id="getFlagState", tag="flags",
    summary="Read a flag's state in an environment",
    replies=(Reply(200, "The state", "FlagState", ("ETag",)),), problems=(401, 404),
)  # fmt: skip
async def get_flag_state(request: web.Request) -> web.Response:
    keys = [path_key(request, name) for name in ("project", "flag", "environment")]
    async with reading(request) as store:
        state, version = await store.flags.get_environment(*keys)
    return _answer(state, version).response()


@api.operation(
    "PUT", _STATE, operation_id="putFlagState", tag="flags",
    summary="Set a flag's state, default variant and targeting in an environment",
    body=FLAG_STATE, headers=("IfMatch",),
    replies=(Reply(200, "The state as it is now", "FlagState", ("ETag",)),),
    problems=(400, 401, 404, 412, 413, 415, 422),
)  # fmt: skip
async def put_flag_state(request: web.Request) -> web.Response:
    project, flag, env = (path_key(request, n) for n in ("project", "flag", "environment"))
    body = await parse(request, FLAG_STATE)
    precondition = if_match(request)

    async def put(store: TenantStore) -> Outcome:
        state, version = await store.flags.put_environment(project, flag, env, body, precondition)
        return _answer(state, version)

    return await write(request, put)
