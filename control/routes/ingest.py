"""``POST /edge/v1/usage``: an edge's syncd hands in the usage its proxies counted.

Authenticated by an edge credential (``Authorization: Bearer crv_edg_…``, made with
``crivline edge create EDGE_ID``), which also says which edge is speaking: the batch's
idempotency key is (that edge, the batch's ``sequence``). The answer carries today's
central totals of the tenants the batch asks about, which the edge's proxies compare
against each plan's daily limit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from control.bodies import read_json
from control.http import json_response
from control.routing import Api, Reply
from control.state import METRICS, POOL
from control.store.usage import edge_of, ingest
from control.tx import ACQUIRE_TIMEOUT, connection
from crivline import tokens
from crivline.errors import BadRequest, Unauthorized
from crivline.plans import day_end, utc_day
from crivline.usage import BatchProblems, parse_batch

api = Api()


async def _edge(request: web.Request) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="crivline-edge"'}
    secret = secret.strip()
    if scheme.lower() != "bearer" or tokens.kind_of(secret) is not tokens.SecretKind.EDGE:
        raise Unauthorized("send an edge credential: Authorization: Bearer crv_edg_…",
                           headers=challenge)  # fmt: skip
    async with request.app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as proxy:
        edge = await edge_of(connection(proxy), tokens.digest(secret))
    if edge is None:
        raise Unauthorized("the edge credential is not valid (unknown or revoked)",
                           headers=challenge)  # fmt: skip
    return edge


@api.operation(
    "POST", "/edge/v1/usage", operation_id="ingestUsage", tag="edge",
    summary="An edge's usage counts, added once per (edge, sequence)",
    body_schema="UsageBatch", authenticated=False, security="edgeCredential",
    replies=(Reply(200, "Added (or already added); today's totals", "UsageReceipt"),),
    problems=(400, 401, 413, 415, 503),
)  # fmt: skip
async def ingest_usage(request: web.Request) -> web.Response:
    edge = await _edge(request)
    try:
        batch = parse_batch(await read_json(request))
    except BatchProblems as bad:
        raise BadRequest("the body is not a valid usage batch", problems=bad.problems) from None
    now = datetime.now(UTC)
    today = utc_day(now)
    async with request.app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as proxy:
        result = await ingest(connection(proxy), edge, batch, today)
    if not result.duplicate:
        request.app[METRICS].writes.labels("usage.batch").inc()
    return json_response(
        {
            "sequence": batch.sequence,
            "duplicate": result.duplicate,
            "day": today.isoformat(),
            "resetsAt": day_end(today).isoformat().replace("+00:00", "Z"),
            "evaluationsToday": result.evaluations_today,
        }
    )
