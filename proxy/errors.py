"""Every error the proxy answers, rendered in ONE place as a JSON body.

The shape is OFREP's: ``{"errorCode": ..., "errorDetails": ...}`` (plus ``"key"`` for
a flag evaluation), on every status — 400, 401, 403, 404, 408, 413, 415, 429, 500, 503 — so
a client never has to parse HTML or plain text, and the OFREP providers find the
fields they read. ``errorCode`` is an OpenFeature code where one applies
(``PARSE_ERROR``, ``INVALID_CONTEXT``, ``FLAG_NOT_FOUND``, ``GENERAL``) and otherwise
names the HTTP condition (``UNAUTHORIZED``, ``RATE_LIMITED`` …).
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from crivline import httpserver
from crivline.errors import ApiError

log = logging.getLogger(__name__)


_CODES: dict[int, str] = {
    400: "INVALID_CONTEXT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "GENERAL",
    503: "UNAVAILABLE",
}


def error_body(status: int, detail: str, code: str | None = None, key: str | None = None) -> bytes:
    body: dict[str, str] = {}
    if key is not None:
        body["key"] = key
    body["errorCode"] = code or _CODES.get(status, "GENERAL")
    body["errorDetails"] = detail
    return orjson.dumps(body)


def error_format(status: int, detail: str) -> tuple[str, bytes]:
    """The proxy's error format for :mod:`crivline.wire` (aiohttp's own refusals)."""
    code = "BAD_REQUEST" if status == 400 else None
    return httpserver.APPLICATION_JSON, error_body(status, detail, code)


def error_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    response = web.Response(
        status=status,
        body=error_body(status, detail, code, key),
        content_type=httpserver.APPLICATION_JSON,
    )
    if headers:
        response.headers.update(headers)
    if status == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="crivline"')
    return response


def api_error_response(exc: ApiError) -> web.Response:
    code = exc.extra.get("errorCode")
    key = exc.extra.get("key")
    return error_response(
        exc.status,
        exc.detail,
        code=str(code) if code is not None else None,
        key=str(key) if key is not None else None,
        headers=exc.headers,
    )


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown route, wrong method, body too large) as JSON."""
    detail = {
        404: "no such endpoint",
        405: f"method {exc.reason!s} not allowed",
        413: "request body too large",
    }.get(exc.status, exc.reason or "request refused")
    if exc.status == 405 and isinstance(exc, web.HTTPMethodNotAllowed):
        detail = f"method not allowed; use {', '.join(sorted(exc.allowed_methods))}"
    if exc.status == 413 and isinstance(exc, web.HTTPRequestEntityTooLarge):
        detail = exc.text or detail
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return error_response(exc.status, detail, headers=headers)


def internal_error_response() -> web.Response:
    return error_response(500, "internal error in the proxy; it has been logged", code="GENERAL")
