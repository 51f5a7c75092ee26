"""``GET /openapi.json``: the proxy's own routes as an OpenAPI 3.1 document.

OFREP's own specification describes the evaluation bodies in full; this document says
what this proxy serves, how each route is authorised and which statuses it answers, so
an SDK author or an operator can see the whole surface in one place. It is built once
(bytes) when the module loads: the hot path never serialises it.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

JSON = "application/json"
_ERROR = {"$ref": "#/components/schemas/Error"}
_KEYED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
_SERVER_KEY = "a server key (`crv_srv_…`)"
_ANY_KEY = "a server or client key (`crv_srv_…`, `crv_cli_…`)"


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": _WHY[s], "content": {JSON: {"schema": _ERROR}}} for s in statuses
    }


_WHY = {
    400: "Malformed request (PARSE_ERROR) or context (INVALID_CONTEXT)",
    401: "No key, or an unknown, revoked or expired one",
    403: "A client key where a server key is needed",
    404: "No such flag (FLAG_NOT_FOUND) or route",
    408: "The body did not arrive in time",
    413: "Body over CRIVLINE_MAX_BODY_BYTES",
    415: "The body is not JSON",
    429: "Rate limit or per-key stream limit (Retry-After)",
    503: "The edge cannot answer yet, or too many streams (Retry-After)",
}

_CONTEXT_BODY = {
    "required": False,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "context": {
                        "type": "object",
                        "description": "The evaluation context; targetingKey is the "
                        "targeting key. Keys must be unique in every object.",
                    }
                },
            }
        }
    },
}

_SSE = {"text/event-stream": {"schema": {"type": "string"}}}

DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Crivline Edge proxy",
        "version": "1",
        "description": "Flag sets for SDKs that evaluate locally (polling and SSE), "
        "OpenFeature remote evaluation (OFREP), and the operator's endpoints. Every "
        "answer names the version it served (Crivline-Version) and, while the proxy "
        "cannot vouch that it is current, how long that has been (Crivline-Stale).",
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "operator": {
                "type": "http",
                "scheme": "bearer",
                "description": "CRIVLINE_OPERATOR_TOKEN (or the status page's session)",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["errorCode", "errorDetails"],
                "properties": {
                    "key": {"type": "string"},
                    "errorCode": {"type": "string"},
                    "errorDetails": {"type": "string"},
                },
            },
            "FlagSet": {
                "type": "object",
                "description": "A flagd flag-set document (docs/flag-format.md).",
                "required": ["flags"],
            },
            "Evaluation": {
                "type": "object",
                "required": ["key"],
                "properties": {
                    "key": {"type": "string"},
                    "value": {},
                    "variant": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "errorCode": {"type": "string"},
                    "errorDetails": {"type": "string"},
                    "metadata": {"type": "object"},
                },
            },
        },
    },
    "paths": {
        "/sdk/v1/flags": {
            "get": {
                "summary": "The flag set, for SDKs that evaluate locally",
                "description": f"Needs {_SERVER_KEY}. ETag and If-None-Match (304).",
                "security": _KEYED,
                "responses": {
                    "200": {
                        "description": "The flag set",
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/FlagSet"}}},
                    },
                    "304": {"description": "Unchanged since the ETag given"},
                    **_errors(401, 403, 429, 503),
                },
            }
        },
        "/sdk/v1/stream": {
            "get": {
                "summary": "The flag set as a stream: put, then a patch per change",
                "description": f"Needs {_SERVER_KEY}. Server-sent events; Last-Event-ID "
                "resumes with just the missed patches.",
                "security": _KEYED,
                "responses": {
                    "200": {"description": "An SSE stream", "content": _SSE},
                    **_errors(401, 403, 429, 503),
                },
            }
        },
        "/ofrep/v1/evaluate/flags/{key}": {
            "post": {
                "summary": "OFREP: evaluate one flag",
                "description": f"Needs {_ANY_KEY}.",
                "security": _KEYED,
                "parameters": [
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": _CONTEXT_BODY,
                "responses": {
                    "200": {
                        "description": "The evaluation",
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Evaluation"}}},
                    },
                    **_errors(400, 401, 404, 408, 413, 415, 429, 503),
                },
            }
        },
        "/ofrep/v1/evaluate/flags": {
            "post": {
                "summary": "OFREP: evaluate every flag",
                "description": f"Needs {_ANY_KEY}. A weak ETag over the flag set and the "
                "context's canonical JSON (304); eventStreams advertises the change stream.",
                "security": _KEYED,
                "requestBody": _CONTEXT_BODY,
                "responses": {
                    "200": {
                        "description": "Every flag's evaluation",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "flags": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Evaluation"},
                                        },
                                        "metadata": {"type": "object"},
                                        "eventStreams": {"type": "array"},
                                    },
                                }
                            }
                        },
                    },
                    "304": {"description": "Unchanged since the ETag given"},
                    **_errors(400, 401, 408, 413, 415, 429, 503),
                },
            }
        },
        "/ofrep/v1/events": {
            "get": {
                "summary": "OFREP event stream: refetchEvaluation messages",
                "description": "Authorised by the signed ticket the bulk answer gives.",
                "parameters": [
                    {
                        "name": "ticket",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "An SSE stream", "content": _SSE},
                    **_errors(401, 429, 503),
                },
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: a complete, fresh sync and every environment loaded",
                "parameters": [
                    {
                        "name": "strict",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "Ready"},
                    "503": {"description": "Not ready, and why"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {"description": "Metrics", "content": {"text/plain": {"schema": {}}}}
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "It"}}}
        },
        "/status": {
            "get": {
                "summary": "The operator's status page (HTML), or its data as JSON with a token",
                "security": [{"operator": []}],
                "responses": {
                    "200": {"description": "The page or its data"},
                    "401": {"description": "Not signed in"},
                    "404": {"description": "CRIVLINE_OPERATOR_TOKEN is not set"},
                },
            },
            "post": {
                "summary": "Sign in to the status page (form: token)",
                "responses": {
                    "303": {"description": "Signed in: a session cookie"},
                    "401": {"description": "Wrong token"},
                    "404": {"description": "CRIVLINE_OPERATOR_TOKEN is not set"},
                },
            },
        },
        "/status/data": {
            "get": {
                "summary": "What this process serves, as JSON",
                "security": [{"operator": []}],
                "responses": {
                    "200": {"description": "The status", "content": {JSON: {"schema": {}}}},
                    "401": {"description": "Not signed in"},
                    "404": {"description": "CRIVLINE_OPERATOR_TOKEN is not set"},
                },
            }
        },
    },
}

_BODY: Final = orjson.dumps(DOCUMENT)

routes = web.RouteTableDef()


@routes.get("/openapi.json", name="openapi")
async def openapi(_request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type=JSON)
