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
from crivline.probes import health_body, readiness_body

api = Api()
READY_TIMEOUT = 2.0


@api.operation(
    "GET", "/healthz", operation_id="health", tag="operations", authenticated=False,
    summary="The process is alive", replies=(Reply(200, "Alive", "Health"),),
)  # fmt: skip
async def healthz(_request: web.Request) -> web.Response:
    return json_response(health_body([]))


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
        reason = f"the database is unreachable ({type(exc).__name__})"
        body = readiness_body([reason], database="unreachable")
        return json_response(body, status=503)
    if missing:
        reason = f"{len(missing)} database migration(s) pending: run `crivline migrate`"
        body = readiness_body([reason], database="migrations pending", pendingMigrations=missing)
        return json_response(body, status=503)
    return json_response(readiness_body([], database="ok"))


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
