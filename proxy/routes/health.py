"""Liveness, readiness and metrics endpoints.

``/healthz``: the process answers (200, always, unless it is wedged).

``/status``, the operator's page (off without ``CRIVLINE_OPERATOR_TOKEN``), is in
:mod:`proxy.routes.status`.

``/readyz``: this edge holds a complete, fresh sync *and* this process has loaded it —
syncd's heartbeat exists, the sync state has an epoch, the last reconciliation is
recent, and every served environment is in memory. The body says what is missing.
Status codes:

- 200 ``ready`` — all of the above;
- 200 ``degraded`` — it was ready, then lost Redis or syncd's freshness: it still
  answers every environment it holds from memory (``Crivline-Stale`` on responses), so
  taking it out of a load balancer would only turn stale answers into none. Operators
  who prefer to fail over anyway ask ``/readyz?strict=1``;
- 503 ``not ready`` — it has never been ready, or strict mode.

Both answer the shape every part shares (:mod:`crivline.probes`): ``status``, ``ready``
(true exactly when the answer is 200), ``reasons``, then this edge's details.

What feeds readiness is :mod:`proxy.edge.monitor`.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from crivline.probes import health_body, probe_body
from proxy import appkeys
from proxy.edge.status import NOT_READY
from proxy.metrics import metrics_handler

routes = web.RouteTableDef()
_HEALTHY = orjson.dumps(health_body([]))


@routes.get("/healthz", name="healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.Response(body=_HEALTHY, content_type="application/json")


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    status = app[appkeys.STATUS]
    now = time.time()
    strict = request.query.get("strict") not in (None, "", "0", "false")
    verdict = status.verdict(now, strict)
    code = 503 if verdict == NOT_READY else 200
    body = probe_body(
        verdict,
        status.problems(now),
        code == 200,
        redis="up" if status.redis_up else "down",
        syncd=status.syncd_view(now),
        environments=len(app[appkeys.CACHE]),
        keys=len(app[appkeys.KEYS]),
        streams=len(app[appkeys.HUB]),
        staleSeconds=status.stale_seconds(now),
        servingSavedFrom=status.saved_at if verdict != "ready" else None,
    )
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


routes.get("/metrics", name="metrics")(metrics_handler)
