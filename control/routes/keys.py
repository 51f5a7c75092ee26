"""API keys of an environment. The secret appears once, in the answer that creates it."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from control.bodies import parse, parse_datetime
from control.http import json_response, path_key, path_uuid
from control.routing import Api, Reply
from control.schemas import NEW_KEY
from control.scopes import Scope
from control.store import TenantStore
from control.tx import Outcome, reading, write
from crivline.errors import FieldProblem, Unprocessable

api = Api("/api/v1")
_KEYS = "/projects/{project}/environments/{environment}/keys"


@api.operation(
    "GET", _KEYS, operation_id="listApiKeys", tag="keys",
    summary="List an environment's API keys (never their secrets)",
    replies=(Reply(200, "The keys, oldest first, revoked ones included", "ApiKeyList"),),
    problems=(401, 404),
)  # fmt: skip
async def list_keys(request: web.Request) -> web.Response:
    project, env = path_key(request, "project"), path_key(request, "environment")
    async with reading(request) as store:
        keys = await store.keys.all(project, env)
    return json_response({"items": [k.to_api() for k in keys]})


@api.operation(
    "POST", _KEYS, operation_id="createApiKey", tag="keys", body=NEW_KEY, scope=Scope.ADMIN,
    summary="Create an API key: crv_srv_… (server) or crv_cli_… (client)",
    headers=("IdempotencyKey",),
    replies=(Reply(201, "The key and, this once, its secret", "CreatedApiKey"),),
    problems=(400, 401, 404, 413, 415, 422),
)  # fmt: skip
async def create_key(request: web.Request) -> web.Response:
    project, env = path_key(request, "project"), path_key(request, "environment")
    body = await parse(request, NEW_KEY)
    expires = body.get("expiresAt")
    expires_at = None if expires is None else parse_datetime(expires)
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise Unprocessable(
            "the key would be born expired",
            problems=[FieldProblem("expiresAt", "must be in the future")],
        )

    async def create(store: TenantStore) -> Outcome:
        key, secret, version = await store.keys.create(
            project, env, body["kind"], body.get("label", ""), expires_at
        )
        answer = {"apiKey": key.to_api(), "key": secret, "environmentVersion": version}
        return Outcome(answer, 201, replay_body={**answer, "key": None})

    return await write(request, create, idempotent=True)


@api.operation(
    "DELETE", _KEYS + "/{key_id}", operation_id="revokeApiKey", tag="keys", scope=Scope.ADMIN,
    summary="Revoke an API key (edges stop accepting it within seconds)",
    replies=(Reply(200, "The revoked key", "ApiKey"),), problems=(401, 404),
)  # fmt: skip
async def revoke_key(request: web.Request) -> web.Response:
    project, env = path_key(request, "project"), path_key(request, "environment")
    key_id = path_uuid(request, "key_id")

    async def revoke(store: TenantStore) -> Outcome:
        return Outcome((await store.keys.revoke(project, env, key_id)).to_api())

    return await write(request, revoke)
