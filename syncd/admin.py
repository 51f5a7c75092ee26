"""syncd's operator routes, behind ``CRIVLINE_OPERATOR_TOKEN`` (404 without one).

``POST /admin/resync`` with ``Authorization: Bearer <token>`` rebuilds now, and answers
when done, the environment a JSON body names (``{"environment": "acme/shop/prod"}`` or
its id) or, with no body or ``{}``, every environment in scope (:mod:`syncd.resync`)::

    {"environments": [{"environment", "name", "postgres", "redis", "outcome"}], "applied": n}

Refusals are RFC 9457 ``application/problem+json``: 400 for a body that is not a JSON
object with at most a string ``environment`` (each problem listed in ``errors``), 401
without the token, 404 for an environment this edge does not serve, 413 for a body over
64 KiB, 503 while Postgres or Redis cannot be reached. Nothing is written before the
request has been checked.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from crivline import httpserver, strictjson
from crivline.errors import (
    ApiError,
    BadRequest,
    FieldProblem,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from crivline.ioerrors import is_io_error
from crivline.logs import describe, fields

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_BODY = 64 * 1024

ResyncRun = Callable[[str | None], Awaitable[list[dict[str, Any]]]]


def problem(error: ApiError, instance: str) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
    }
    if error.problems:
        body["errors"] = [{"path": p.path, "message": p.message} for p in error.problems]
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        content_type=PROBLEM_JSON,
        headers=error.headers,
    )


def _authorize(request: web.Request, token: str) -> None:
    presented = request.headers.get("Authorization", "")
    scheme, _, value = presented.partition(" ")
    matches = hmac.compare_digest(
        value.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )
    if scheme.lower() != "bearer" or not matches:
        raise Unauthorized(
            "the operator token is required: Authorization: Bearer <CRIVLINE_OPERATOR_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _environment(raw: bytes) -> str | None:
    if not raw.strip():
        return None
    try:
        doc = strictjson.loads(raw)
    except (strictjson.JSONDecodeError, strictjson.DuplicateKey) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest(
            "the body must be a JSON object", problems=[FieldProblem("", "not an object")]
        )
    problems = [FieldProblem(k, "unknown field") for k in sorted(doc) if k != "environment"]
    name = doc.get("environment")
    if name is not None and not isinstance(name, str):
        problems.append(FieldProblem("environment", "must be a string"))
    if problems:
        raise BadRequest("the body has problems", problems=problems)
    return name


def add_admin_routes(app: web.Application, token: str | None, resync: ResyncRun) -> None:
    async def resync_handler(request: web.Request) -> web.Response:
        try:
            if token is None:
                raise NotFound("the admin routes are off (CRIVLINE_OPERATOR_TOKEN is not set)")
            _authorize(request, token)
            raw = await httpserver.read_body(request, MAX_BODY)
            name = _environment(raw)
            results = await resync(name)
        except ApiError as error:
            return problem(error, request.path)
        except Exception as exc:
            if not is_io_error(exc):
                raise
            log.warning("resync failed", extra=fields(error=describe(exc)))
            return problem(
                ServiceUnavailable(f"Postgres or Redis unavailable: {describe(exc)}"), request.path
            )
        applied = sum(1 for r in results if r["outcome"] == "applied")
        log.info("operator resync", extra=fields(environments=len(results), applied=applied))
        return web.json_response({"environments": results, "applied": applied})

    app.router.add_post("/admin/resync", resync_handler)
