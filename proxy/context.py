"""Reading an evaluation request: the body (bounded), the JSON, the context (bounded).

OFREP bodies are ``{"context": {...}}``. A missing body, a missing ``context`` or a
missing ``targetingKey`` are all accepted (flags that need them answer accordingly); a
body that is not JSON is a PARSE_ERROR, a context that is not an object — or is nested
deeper or holds more values than the limits allow — is INVALID_CONTEXT, and a body over
``CRIVLINE_MAX_BODY_BYTES`` is a 413, one that does not arrive in time a 408 and one
that cannot be decoded a 400 (:func:`crivline.httpserver.read_body`). Each refusal says
which limit and by how much.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crivline import httpserver, strictjson
from crivline.errors import BadRequest


def _refusal(exc_type: type[BadRequest], code: str, detail: str, key: str | None) -> BadRequest:
    extra: dict[str, object] = {"errorCode": code}
    if key is not None:
        extra["key"] = key
    return exc_type(detail, extra=extra)


async def read_body(request: web.Request, max_bytes: int, seconds: float) -> bytes:
    """The body (see :func:`crivline.httpserver.read_body`); one whose Content-Encoding or
    framing is broken is a PARSE_ERROR, not the evaluation context's fault."""
    try:
        return await httpserver.read_body(request, max_bytes, seconds)
    except BadRequest as exc:
        raise _refusal(BadRequest, "PARSE_ERROR", exc.detail, None) from None


def parse_context(
    body: bytes, *, key: str | None, max_depth: int, max_nodes: int
) -> dict[str, Any]:
    """The evaluation context of an OFREP request body."""
    if not body or body.isspace():
        return {}
    try:
        doc = strictjson.loads(body)
    except strictjson.JSONDecodeError as exc:
        raise _refusal(
            BadRequest, "PARSE_ERROR", f"the request body is not valid JSON: {exc}", key
        ) from None
    except strictjson.DuplicateKey as exc:
        raise _refusal(
            BadRequest,
            "PARSE_ERROR",
            f"the request body is ambiguous: a JSON object has the key {exc.key!r} more than once",
            key,
        ) from None
    if type(doc) is not dict:
        raise _refusal(
            BadRequest,
            "PARSE_ERROR",
            'the request body must be a JSON object like {"context": {...}}',
            key,
        )
    context = doc.get("context")
    if context is None:
        return {}
    if type(context) is not dict:
        raise _refusal(
            BadRequest,
            "INVALID_CONTEXT",
            f"context must be a JSON object, not {_json_type(context)}",
            key,
        )
    problem = check_limits(context, max_depth, max_nodes)
    if problem is not None:
        raise _refusal(BadRequest, "INVALID_CONTEXT", problem, key)
    return context


def check_limits(context: dict[str, Any], max_depth: int, max_nodes: int) -> str | None:
    """What is wrong with the size of ``context``, or None."""
    values = context.values()
    if len(context) > max_nodes:
        return f"context has {len(context)} attributes; the limit is {max_nodes} values"
    # Fast path: a flat context of scalars, the common case (a loop: no generator).
    for value in values:
        kind = type(value)
        if kind is dict or kind is list:
            break
    else:
        return None
    nodes = 0
    stack: list[tuple[Any, int]] = [(context, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            return f"context holds more than {max_nodes} values (objects, arrays and scalars)"
        kind = type(value)
        if kind is dict or kind is list:
            if depth > max_depth:
                return f"context is nested more than {max_depth} levels deep"
            children = value.values() if kind is dict else value
            stack.extend((child, depth + 1) for child in children)
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "null"
