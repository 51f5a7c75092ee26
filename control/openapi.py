"""The OpenAPI 3.1 document of the control API, built from the route declarations."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from control.http import KEY_PATTERN
from control.idempotency import HEADER as IDEMPOTENCY_HEADER
from control.idempotency import REPLAYED_HEADER
from control.routing import Operation
from control.schemas import BODIES, RESPONSE_SCHEMAS
from control.scopes import Scope

_PATH_PARAMETER = re.compile(r"\{(\w+)\}")
_SCHEMAS = "#/components/schemas/"

# Path parameters: what each names, and an example that exists in the demo tenant, so
# a contract test's examples phase reaches real objects.
_PATH_PARAMETERS: dict[str, tuple[str, dict[str, Any]]] = {
    "project": ("Project key", {"type": "string", "pattern": KEY_PATTERN, "example": "demo-app"}),
    "environment": (
        "Environment key",
        {"type": "string", "pattern": KEY_PATTERN, "example": "development"},
    ),
    "flag": ("Flag key", {"type": "string", "pattern": KEY_PATTERN, "example": "new-checkout"}),
    "segment": ("Segment key", {"type": "string", "pattern": KEY_PATTERN, "example": "pro-users"}),
    "key_id": ("API key id", {"type": "string", "format": "uuid"}),
    "token_id": ("Management token id", {"type": "string", "format": "uuid"}),
}

_PARAMETERS: dict[str, dict[str, Any]] = {
    "archived": {
        "name": "archived", "in": "query", "required": False,
        "description": "Which flags: live ones (false, the default), archived ones, or all.",
        "schema": {"enum": ["false", "true", "all"], "default": "false"},
    },
    "projectChanges": {
        "name": "projectChanges", "in": "query", "required": False,
        "description": "What an import does when it would change a flag's project-wide "
        "parts (variants, metadata, or restoring it from the archive), which every "
        "environment serves: refuse (409, the default) or apply (and report them).",
        "schema": {"enum": ["refuse", "apply"], "default": "refuse"},
    },
    "project": {
        "name": "project", "in": "query", "required": False,
        "description": "Only entries of this project (by key).",
        "schema": {"type": "string", "pattern": KEY_PATTERN},
    },
    "limit": {
        "name": "limit", "in": "query", "required": False, "description": "Entries per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    },
    "cursor": {
        "name": "cursor", "in": "query", "required": False,
        "description": "The nextCursor of the previous page (opaque).",
        "schema": {"type": "string", "minLength": 1},
    },
    "from": {
        "name": "from", "in": "query", "required": False,
        "description": "First UTC day, YYYY-MM-DD (default: today).",
        "schema": {"type": "string", "format": "date"},
    },
    "to": {
        "name": "to", "in": "query", "required": False,
        "description": "Last UTC day, YYYY-MM-DD, included (default: today); at most 366 "
        "days after from.",
        "schema": {"type": "string", "format": "date"},
    },
    "StripeSignature": {
        "name": "Stripe-Signature", "in": "header", "required": True,
        "description": "Stripe's signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "
        "'{t}.{body}' under the endpoint secret> (one or more v1).",
        "schema": {"type": "string"},
    },
    "IfMatch": {
        "name": "If-Match", "in": "header", "required": False,
        "description": "Write only if the object is still at this ETag (else 412), like "
        '"3" (a bare 3 is read as "3"), or *. Without it the write is unconditional; a '
        "tag that is neither quoted nor a number is 400.",
        "schema": {"type": "string"},
    },
    "IfNoneMatch": {
        "name": "If-None-Match", "in": "header", "required": False,
        "description": "Answer 304 if the flag set is still at this ETag.",
        "schema": {"type": "string"},
    },
    "IdempotencyKey": {
        "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
        "description": "Retry safely: the same key and request replay the first answer; "
        "the same key with another request is refused (422). Kept 24 hours.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": "^[\\x20-\\x7e]+$"},
    },
}  # fmt: skip

_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"description": "The object's revision (the version, for a flag set).",
             "required": True, "schema": {"type": "string"}},
    "Location": {"description": "Where the new object lives.", "required": True,
                 "schema": {"type": "string"}},
    "Crivline-Version": {"description": "The environment version of this flag set.",
                         "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "Crivline-Flags-Version": {
        "description": "The flag set's version: the environment version of the last change "
                       "to the flag set (later versions changed only keys or the plan). The "
                       "edge's ETags and stream ids name it.",
        "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "WWW-Authenticate": {"description": "The Bearer challenge.", "required": True,
                         "schema": {"type": "string"}},
}  # fmt: skip

_PROBLEM_TEXT = {
    400: "The request is malformed: not JSON, wrong shape, unknown fields, bad parameters",
    401: "No valid management token",
    403: "The management token's scope is below the one this operation needs",
    404: "No such object in this tenant",
    409: "Conflicts with the current state (a key in use, a segment still referenced)",
    412: "If-Match names a revision that is no longer current",
    413: "The body is larger than the server accepts",
    415: "The body is not application/json",
    422: "Well-formed but not valid (see errors), or an Idempotency-Key reused",
    503: "The database is unreachable; retry later",
}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    out = []
    for name in _PATH_PARAMETER.findall(path):
        description, schema = _PATH_PARAMETERS[name]
        out.append(
            {"name": name, "in": "path", "required": True, "description": description,
             "schema": schema}
        )  # fmt: skip
    return out


def _problem(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": _PROBLEM_TEXT[status],
        "content": {"application/problem+json": {"schema": {"$ref": _SCHEMAS + "Problem"}}},
    }
    if status == 401:
        answer["headers"] = {"WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"}}
    return answer


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary,
                           "tags": [op.tag]}  # fmt: skip
    if op.description:
        doc["description"] = op.description
    parameters = _path_parameters(op.path)
    parameters += [{"$ref": f"#/components/parameters/{name}"} for name in op.query + op.headers]
    if parameters:
        doc["parameters"] = parameters
    body_schema = op.body.name if op.body is not None else op.body_schema
    if body_schema is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _SCHEMAS + body_schema}}},
        }
    responses: dict[str, Any] = {}
    for reply in op.replies:
        answer: dict[str, Any] = {"description": reply.description}
        if reply.media_type:
            media: dict[str, Any] = {}
            if reply.schema is not None:
                media["schema"] = {"$ref": _SCHEMAS + reply.schema}
            answer["content"] = {reply.media_type: media}
        headers: dict[str, Any] = {h: {"$ref": f"#/components/headers/{h}"} for h in reply.headers}
        if "IdempotencyKey" in op.headers:
            headers[REPLAYED_HEADER] = {
                "description": "true when this is a replay of an earlier answer",
                "schema": {"const": "true"},
            }
        if headers:
            answer["headers"] = headers
        responses[str(reply.status)] = answer
    statuses = set(op.problems)
    if op.authenticated and op.scope is not None:
        statuses |= {401, 503}
        if op.scope is not Scope.READ:
            statuses.add(403)
        # OpenAPI 3.1: the roles a bearer scheme requires; and the scope by name.
        doc["security"] = [{"managementToken": [op.scope.value]}]
        doc["x-crivline-scope"] = op.scope.value
    elif op.security is not None:
        statuses |= {401}
        doc["security"] = [{op.security: []}]
    else:
        doc["security"] = []
    for status in sorted(statuses):
        responses[str(status)] = _problem(status)
    doc["responses"] = responses
    return doc


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    schemas = {body.name: body.json_schema() for body in BODIES}
    schemas.update(RESPONSE_SCHEMAS)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Crivline control API",
            "version": "1",
            "description": (
                "The write API of Crivline's central Postgres. Every write is one "
                "transaction: the change, an audit row, and a bump of each affected "
                "environment's version, which the edges follow. Errors are RFC 9457 "
                "problem details."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": _PARAMETERS,
            "headers": _HEADERS,
            "securitySchemes": {
                "managementToken": {
                    "type": "http", "scheme": "bearer",
                    "description": "A management token, crv_mgt_…, of one tenant, with "
                    "a scope: read (GETs), write (changes), admin (API keys and tokens). "
                    "Each operation lists the scope it needs (x-crivline-scope).",
                },
                "edgeCredential": {
                    "type": "http", "scheme": "bearer",
                    "description": "An edge's credential, crv_edg_… (`crivline edge create`):"
                    " what an edge's syncd reports its usage with.",
                },
            },
        },
    }  # fmt: skip
