"""syncd's HTTP face: ``/healthz``, ``/readyz``, ``/metrics``, and the operator's
``/admin/resync`` (:mod:`syncd.admin`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.admin import MAX_BODY, ResyncRun, add_admin_routes

Status = Callable[[], dict[str, Any]]


def build_app(
    health: Status,
    readiness: Status,
    registry: CollectorRegistry,
    *,
    resync: ResyncRun | None = None,
    operator_token: str | None = None,
) -> web.Application:
    """``health()`` / ``readiness()`` return the probe shape of :mod:`crivline.probes`."""

    async def healthz(_request: web.Request) -> web.Response:
        body = health()
        return web.json_response(body, status=200 if body["ready"] else 503)

    async def readyz(_request: web.Request) -> web.Response:
        body = readiness()
        return web.json_response(body, status=200 if body["ready"] else 503)

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if resync is not None:
        add_admin_routes(app, operator_token, resync)
    return app
