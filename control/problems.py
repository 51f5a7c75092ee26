"""Every error leaves the control API as RFC 9457 ``application/problem+json``, from here.

One middleware renders :class:`~crivline.errors.ApiError` (the deliberate refusals),
aiohttp's own HTTP errors (no such route, method not allowed …), a database that cannot
be reached (503, retry later) and anything else (500, logged with its traceback for the
operator, never shown to the client).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from crivline.errors import ApiError, ServiceUnavailable
from crivline.logs import describe, fields

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The HTTP errors aiohttp raises itself; their headers (Allow on 405) are kept.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=PROBLEM_JSON,
        headers=dict(headers or {}),
    )


def from_api_error(error: ApiError, instance: str) -> web.Response:
    return problem_response(
        error.status,
        error.title,
        error.detail,
        instance=instance,
        errors=[{"path": p.path, "message": p.message} for p in error.problems],
        extra=error.extra,
        headers=error.headers,
    )


def _from_http_exception(exc: web.HTTPException, instance: str) -> web.Response:
    headers = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
    detail = {
        404: "there is nothing at this address",
        405: f"{exc.headers.get('Allow', 'other methods')} are the methods allowed here",
        413: "the request body is larger than this server accepts",
    }.get(exc.status, exc.reason)
    return problem_response(exc.status, exc.reason, detail, instance=instance, headers=headers)


# Connection-level database failures: the request may well succeed a little later.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # What asyncpg raises on a pooled connection whose server went away mid-operation.
    asyncpg.exceptions.InternalClientError,
)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return from_api_error(error, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and 304s are answers, not problems
        return _from_http_exception(exc, request.path)
    except _UNAVAILABLE as exc:
        log.warning(
            "database unavailable",
            extra=fields(path=request.path, error=describe(exc)),
        )
        unavailable = ServiceUnavailable(
            "the central database cannot be reached right now; retry shortly",
            headers={"Retry-After": "2"},
        )
        return from_api_error(unavailable, request.path)
    except Exception:
        log.exception("unhandled error", extra=fields(method=request.method, path=request.path))
        return problem_response(
            500,
            "Internal Server Error",
            "the server failed to handle this request; it has been logged",
            instance=request.path,
        )
