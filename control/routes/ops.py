"""Operator endpoints: liveness, readiness, metrics and the API's own description."""

from __future__ import annotations

import asyncio

from aiohttp import web

from control.http import json_response
from control.routing import Api, Reply
from control.state import METRICS, OPENAPI, POOL
from control.tx import connection
from crivline.ioerrors import POSTGRES_ERRORS
from crivline.migrate import pending

api = Api()
READY_TIMEOUT = 2.0


@api.operation(
    "GET", "/healthz", operation_id="health", tag="operations", authenticated=False,
    summary="The process is alive", replies=(Reply(200, "Alive", "Health"),),
)  # fmt: skip
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@api.operation(
    "GET", "/readyz", operation_id="readiness", tag="operations", authenticated=False,
    summary="The database is reachable and fully migrated",
    replies=(Reply(200, "Ready", "Readiness"), Reply(503, "Not ready, and why", "Readiness")),
)  # fmt: skip
async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            async with request.app[POOL].acquire() as proxy:
                missing = await pending(connection(proxy))
    except POSTGRES_ERRORS as exc:
        reason = f"unreachable: {type(exc).__name__}"
        return json_response({"status": "not ready", "database": reason}, status=503)
    if missing:
        body = {"status": "not ready", "database": "migrations pending",
                "pendingMigrations": missing}  # fmt: skip
        return json_response(body, status=503)
    return json_response({"status": "ready", "database": "ok"})


@api.operation(
    "GET", "/metrics", operation_id="metrics", tag="operations", authenticated=False,
    summary="Prometheus metrics",
    replies=(Reply(200, "The text exposition format", media_type="text/plain"),),
)  # fmt: skip
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    return web.Response(body=registry.exposition(), headers={"Content-Type": registry.content_type})


@api.operation(
    "GET", "/openapi.json", operation_id="openapi", tag="operations", authenticated=False,
    summary="This document (OpenAPI 3.1)",
    replies=(Reply(200, "The OpenAPI document"),),
)  # fmt: skip
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
