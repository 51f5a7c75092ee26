"""Liveness, readiness and metrics endpoints, and the monitor that feeds readiness.

``/healthz``: the process answers (200, always, unless it is wedged).

``/status``, the operator's page (off without ``CRIVLINE_OPERATOR_TOKEN``), is in
:mod:`proxy.status_page`.

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

The monitor polls Redis once per ``health_interval``: the heartbeat key and the sync
state. Two failures in a row make the subscriber reconnect (a hung connection looks
like silence, not like an error); a new sync epoch (Redis was rebuilt) does too, so
the process resynchronises everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from proxy import appkeys
from proxy.metrics import metrics_handler

log = logging.getLogger("proxy.health")

routes = web.RouteTableDef()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def monitor(app: web.Application) -> None:
    redis = app[appkeys.REDIS]
    ks = app[appkeys.KEYSPACE]
    status = app[appkeys.STATUS]
    subscriber = app[appkeys.SUBSCRIBER]
    interval = app[appkeys.OPTIONS].health_interval
    failures = 0
    while True:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.exists(ks.heartbeat)
                pipe.hgetall(ks.sync_state)
                alive, raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            failures += 1
            status.redis_lost(f"{type(exc).__name__}: {exc}")
            if failures == 2:
                subscriber.kick(f"health check failed: {exc}")
        else:
            failures = 0
            fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
            epoch = fields.get("epoch") or None
            previous = status.epoch
            reconciled = fields.get("reconciled_at")
            if subscriber.connected.is_set() and not status.redis_up:
                status.redis_back()
            status.observed(
                syncd_alive=bool(alive),
                epoch=epoch,
                reconciled_at=float(reconciled) if reconciled else None,
            )
            if previous is not None and epoch is not None and epoch != previous:
                log.info("sync epoch changed: redis was rebuilt; resynchronising")
                subscriber.kick("sync epoch changed")
        await asyncio.sleep(interval)


@routes.get("/healthz", name="healthz")
async def healthz(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    app = request.app
    status = app[appkeys.STATUS]
    now = time.time()
    problems = status.problems(now)
    strict = request.query.get("strict") not in (None, "", "0", "false")
    if not problems:
        verdict, code = "ready", 200
    elif status.ever_ready and status.warm and not strict:
        verdict, code = "degraded", 200
    else:
        verdict, code = "not ready", 503
    body = {
        "status": verdict,
        "problems": problems,
        "redis": "up" if status.redis_up else "down",
        "syncd": {
            "heartbeat": status.syncd_alive,
            "epoch": status.epoch is not None,
            "reconciledSecondsAgo": (
                round(now - status.reconciled_at, 1) if status.reconciled_at else None
            ),
            "freshWithinSeconds": status.fresh_seconds,
        },
        "environments": len(app[appkeys.CACHE]),
        "keys": len(app[appkeys.KEYS]),
        "streams": len(app[appkeys.HUB]),
        "staleSeconds": status.stale_seconds(now),
    }
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


routes.get("/metrics", name="metrics")(metrics_handler)
