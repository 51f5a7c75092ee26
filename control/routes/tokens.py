"""Management tokens of the caller's tenant (admin scope). The secret appears once, in
the answer that issues it; only its hash is stored, and every change is audited."""

from __future__ import annotations

from aiohttp import web

from control.bodies import parse
from control.http import json_response, path_uuid
from control.routing import Api, Reply
from control.schemas import NEW_TOKEN
from control.scopes import Scope
from control.store import TenantStore
from control.tx import Outcome, reading, write

api = Api("/api/v1")


@api.operation(
    "GET", "/tokens", operation_id="listManagementTokens", tag="tokens", scope=Scope.ADMIN,
    summary="List the tenant's management tokens (never their secrets)",
    replies=(Reply(200, "The tokens, oldest first, revoked ones included",
                   "ManagementTokenList"),),
    problems=(401,),
)  # fmt: skip
async def list_tokens(request: web.Request) -> web.Response:
    async with reading(request) as store:
        found = await store.tokens.all()
    return json_response({"items": [t.to_api() for t in found]})


@api.operation(
    "POST", "/tokens", operation_id="createManagementToken", tag="tokens", body=NEW_TOKEN,
    scope=Scope.ADMIN, headers=("IdempotencyKey",),
    summary="Issue a management token: read, write or admin",
    replies=(Reply(201, "The token and, this once, its secret", "CreatedManagementToken"),),
    problems=(400, 401, 413, 415, 422),
)  # fmt: skip
async def create_token(request: web.Request) -> web.Response:
    body = await parse(request, NEW_TOKEN)

    async def create(store: TenantStore) -> Outcome:
        token, secret = await store.tokens.create(body["scope"], body.get("label", ""))
        answer = {"token": token.to_api(), "secret": secret}
        return Outcome(answer, 201, replay_body={**answer, "secret": None})

    return await write(request, create, idempotent=True)


@api.operation(
    "DELETE", "/tokens/{token_id}", operation_id="revokeManagementToken", tag="tokens",
    scope=Scope.ADMIN,
    summary="Revoke a management token (it stops working at once; never the last admin token)",
    replies=(Reply(200, "The revoked token", "ManagementToken"),), problems=(401, 404, 409),
)  # fmt: skip
async def revoke_token(request: web.Request) -> web.Response:
    token_id = path_uuid(request, "token_id")

    async def revoke(store: TenantStore) -> Outcome:
        return Outcome((await store.tokens.revoke(token_id)).to_api())

    return await write(request, revoke)
