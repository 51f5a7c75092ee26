"""The shapes of the control API: request bodies (checked by :mod:`control.bodies`) and
the JSON Schemas of what it answers (published in ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Final

from control.bodies import Body, Field
from control.http import KEY_PATTERN
from crivline.plans import USAGE_KINDS

FLAG_TYPES: Final = ("boolean", "string", "integer", "float", "object")
STATES: Final = ("ENABLED", "DISABLED")

_KEY = Field(
    "string",
    required=True,
    pattern=KEY_PATTERN,
    description="A slug: 1-128 letters, digits, '_', '.' or '-'.",
)
_NAME = Field("string", min_length=1, max_length=200, description="Display name.")

# -- request bodies ---------------------------------------------------------------------

NEW_PROJECT = Body(
    "NewProject", {"key": _KEY, "name": _NAME}, examples=({"key": "web-shop", "name": "Web shop"},)
)
_BUCKETING = Field(
    "string",
    choices=("v2", "v3"),
    description="The fractional bucketing scheme of the environment's flag set: v3, "
    "flagd's current one (the default), or v2, the one environments created before it "
    "keep (see docs/flag-format.md).",
)
NEW_ENVIRONMENT = Body(
    "NewEnvironment",
    {"key": _KEY, "name": _NAME, "fractionalBucketing": _BUCKETING},
    examples=({"key": "staging", "name": "Staging"},),
)

PROJECT_PATCH = Body(
    "ProjectPatch",
    {"name": _NAME},
    description="Fields to change. A project's key never changes: SDK flag-set ids and edge "
    "scopes name it.",
    examples=({"name": "Web shop (EU)"},),
)
ENVIRONMENT_PATCH = Body(
    "EnvironmentPatch",
    {"name": _NAME, "fractionalBucketing": _BUCKETING},
    description="Fields to change. An environment's key never changes: SDK flag-set ids and "
    "edge scopes name it. Changing fractionalBucketing re-buckets every user of its "
    "fractional rules: it is what a v2 environment does to move to flagd's v3, knowingly.",
    examples=({"fractionalBucketing": "v3"},),
)

NEW_FLAG = Body(
    "NewFlag",
    {
        "key": _KEY,
        "name": Field("string", max_length=200),
        "description": Field("string", max_length=4000),
        "type": Field("string", required=True, choices=FLAG_TYPES),
        "variants": Field(
            "object",
            required=True,
            description="Variant name to value; values must match the type.",
        ),
        "defaultVariant": Field(
            "string", nullable=True, description="The variant every environment starts with."
        ),
        "metadata": Field("object", description="Strings, numbers and booleans."),
    },
    description="A new flag. It starts DISABLED in every environment.",
    examples=(
        {
            "key": "new-checkout",
            "type": "boolean",
            "name": "New checkout",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
        },
    ),
)

FLAG_PATCH = Body(
    "FlagPatch",
    {
        "name": Field("string", max_length=200),
        "description": Field("string", max_length=4000),
        "variants": Field("object"),
        "metadata": Field("object"),
    },
    description="Fields to change; the others stay. A flag's key and type never change.",
    examples=({"description": "Rolls out the new checkout"},),
)

FLAG_STATE = Body(
    "FlagStateInput",
    {
        "state": Field("string", required=True, choices=STATES),
        "defaultVariant": Field(
            "string", nullable=True, description="null: the SDK's code default."
        ),
        "targeting": Field(
            "object", nullable=True, description="A flagd JSONLogic rule; {} or null: none."
        ),
    },
    description="The flag's whole state in one environment (fields left out become null).",
    examples=(
        {
            "state": "ENABLED",
            "defaultVariant": "off",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]},
        },
    ),
)

SEGMENT = Body(
    "SegmentInput",
    {"definition": Field("object", required=True, description="A JSONLogic rule.")},
    examples=({"definition": {"in": [{"var": "plan"}, ["pro", "enterprise"]]}},),
)

NEW_KEY = Body(
    "NewApiKey",
    {
        "kind": Field(
            "string",
            required=True,
            choices=("server", "client"),
            description="server: full flag configuration; client: evaluation only.",
        ),
        "label": Field("string", max_length=200),
        "expiresAt": Field("date-time", nullable=True),
    },
    examples=({"kind": "server", "label": "checkout service"},),
)

NEW_TOKEN = Body(
    "NewManagementToken",
    {
        "scope": Field(
            "string",
            required=True,
            choices=("read", "write", "admin"),
            description="read: GETs only; write: every change to flags, segments, projects "
            "and environments; admin: also API keys and management tokens.",
        ),
        "label": Field("string", max_length=200),
    },
    examples=({"scope": "read", "label": "dashboard"},),
)

FLAG_SET_DOCUMENT = Body(
    "FlagSetDocument",
    {
        "flags": Field("object", required=True, description="Flag key to flagd flag."),
        "$evaluators": Field("object", description="Shared rules, named by $ref."),
        "metadata": Field("object", description="Accepted and not stored."),
        "$schema": Field("string", description="Accepted and not stored."),
    },
    description="A flagd flag definition document.",
    examples=(
        {
            "flags": {
                "banner": {
                    "state": "ENABLED",
                    "variants": {"a": "Hi", "b": "Ho"},
                    "defaultVariant": "a",
                }
            }
        },
    ),
)

BODIES: Final = (
    NEW_PROJECT,
    NEW_ENVIRONMENT,
    PROJECT_PATCH,
    ENVIRONMENT_PATCH,
    NEW_FLAG,
    FLAG_PATCH,
    FLAG_STATE,
    SEGMENT,
    NEW_KEY,
    NEW_TOKEN,
    FLAG_SET_DOCUMENT,
)

# -- answers ------------------------------------------------------------------------------

_TIME: Final = {"type": "string", "format": "date-time"}
_UUID: Final = {"type": "string", "format": "uuid"}
_ANY: Final[dict[str, Any]] = {}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


def _list_of(name: str) -> dict[str, Any]:
    return _object({"items": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}})


_COUNT: Final = {"type": "integer", "minimum": 0}
_LIMIT: Final = {"type": ["integer", "null"], "minimum": 0, "description": "null: no limit"}
_DATE: Final = {"type": "string", "format": "date"}
_NULLABLE_TEXT: Final = {"type": ["string", "null"]}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}

PLAN_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Plan": _object(
        {
            "tier": {"type": "string"},
            "name": {"type": "string"},
            "status": {"type": "string", "description": "The subscription's; none without"},
            "subscribedTier": {"type": "string"},
            "limits": _object(
                {
                    "evaluationsPerDay": _LIMIT,
                    "streamsPerEnvironment": _LIMIT,
                    "flagsPerProject": _LIMIT,
                    "environmentsPerProject": _LIMIT,
                }
            ),
            "subscription": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "source": {"enum": ["stripe", "manual"]},
                            "tier": {"type": "string"},
                            "status": {"type": "string"},
                            "stripeCustomerId": _NULLABLE_TEXT,
                            "stripeSubscriptionId": _NULLABLE_TEXT,
                            "stripePriceId": _NULLABLE_TEXT,
                            "currentPeriodStart": _NULLABLE_TIME,
                            "currentPeriodEnd": _NULLABLE_TIME,
                            "cancelAtPeriodEnd": {"type": "boolean"},
                            "updatedAt": _TIME,
                        }
                    ),
                ]
            },
            "today": _object(
                {
                    "day": _DATE,
                    "evaluations": _COUNT,
                    "streams": _COUNT,
                    "remainingEvaluations": {"type": ["integer", "null"], "minimum": 0},
                    "resetsAt": _TIME,
                }
            ),
        },
        optional=("subscribedTier",),
    ),
    "UsageReport": _object(
        {
            "from": _DATE,
            "to": _DATE,
            "items": {
                "type": "array",
                "items": _object(
                    {
                        "day": _DATE,
                        "project": {"type": "string"},
                        "environment": {"type": "string"},
                        "kind": {"enum": list(USAGE_KINDS)},
                        "count": _COUNT,
                    }
                ),
            },
        }
    ),
    "StripeEvent": {
        "type": "object",
        "description": "A Stripe event, exactly as Stripe sends it (signed).",
        "required": ["id", "type", "created", "data"],
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string"},
            "created": {"type": "integer"},
            "data": {"type": "object"},
        },
    },
    "UsageBatch": {
        "type": "object",
        "description": "Counts an edge's proxies made, added once per (edge, sequence).",
        "required": ["sequence"],
        "additionalProperties": False,
        "properties": {
            "sequence": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            "counts": {
                "type": "array",
                "maxItems": 10_000,
                "items": _object(
                    {
                        "environment": _UUID,
                        "day": _DATE,
                        "kind": {"enum": list(USAGE_KINDS)},
                        "count": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    }
                ),
            },
            "tenants": {"type": "array", "maxItems": 10_000, "items": _UUID},
        },
    },
    "UsageReceipt": _object(
        {
            "sequence": {"type": "integer"},
            "duplicate": {"type": "boolean"},
            "day": _DATE,
            "resetsAt": _TIME,
            "evaluationsToday": {"type": "object", "additionalProperties": _COUNT},
        }
    ),
    "WebhookReceipt": _object(
        {
            "received": {"const": True},
            "result": {"enum": ["applied", "duplicate", "stale", "ignored"]},
            "detail": {"type": "string"},
        }
    ),
}

_STATE_SUMMARY = {
    "state": {"enum": list(STATES)},
    "defaultVariant": {"type": ["string", "null"]},
    "targeting": {"type": ["object", "null"]},
    "revision": {"type": "integer", "minimum": 1},
}

RESPONSE_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Project": _object(
        {
            "id": _UUID,
            "key": {"type": "string"},
            "name": {"type": "string"},
            "createdAt": _TIME,
            "updatedAt": _TIME,
        }
    ),
    "Environment": _object(
        {
            "id": _UUID,
            "key": {"type": "string"},
            "name": {"type": "string"},
            "version": {"type": "integer", "minimum": 1, "description": "The replication clock."},
            "fractionalBucketing": {"type": "string", "enum": ["v2", "v3"]},
            "createdAt": _TIME,
            "updatedAt": _TIME,
        }
    ),
    "Flag": _object(
        {
            "id": _UUID,
            "key": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "type": {"enum": list(FLAG_TYPES)},
            "variants": {"type": "object"},
            "metadata": {"type": "object"},
            "archived": {"type": "boolean"},
            "revision": {"type": "integer", "minimum": 1},
            "createdAt": _TIME,
            "updatedAt": _TIME,
            "environments": {
                "type": "object",
                "additionalProperties": _object(dict(_STATE_SUMMARY)),
            },
        }
    ),
    "FlagState": _object(
        {
            "flag": {"type": "string"},
            "environment": {"type": "string"},
            **_STATE_SUMMARY,
            "updatedAt": _TIME,
            "updatedBy": {"type": "string"},
            "environmentVersion": {"type": "integer", "minimum": 1},
        }
    ),
    "Segment": _object(
        {
            "id": _UUID,
            "key": {"type": "string"},
            "definition": {"type": "object"},
            "revision": {"type": "integer", "minimum": 1},
            "createdAt": _TIME,
            "updatedAt": _TIME,
        }
    ),
    "ApiKey": _object(
        {
            "id": _UUID,
            "environment": {"type": "string"},
            "kind": {"enum": ["server", "client"]},
            "label": {"type": "string"},
            "displayPrefix": {"type": "string"},
            "createdAt": _TIME,
            "expiresAt": {"type": ["string", "null"], "format": "date-time"},
            "revokedAt": {"type": ["string", "null"], "format": "date-time"},
        }
    ),
    "CreatedApiKey": _object(
        {
            "apiKey": {"$ref": "#/components/schemas/ApiKey"},
            "key": {
                "type": ["string", "null"],
                "pattern": "^crv_(srv|cli)_",
                "description": "The secret: shown in this response only (null in a replay).",
            },
            "environmentVersion": {"type": "integer", "minimum": 1},
        }
    ),
    "AuditEntry": _object(
        {
            "id": {"type": "string"},
            "projectId": {"type": ["string", "null"], "format": "uuid"},
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "entityType": {"type": "string"},
            "entityId": {"type": ["string", "null"], "format": "uuid"},
            "entityKey": {"type": "string"},
            "before": _ANY,
            "after": _ANY,
            "createdAt": _TIME,
        }
    ),
    "AuditPage": _object(
        {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "Pass as ?cursor= for the next page; null at the end.",
            },
        }
    ),
    "Deletion": _object(
        {
            "project": {"type": "string", "description": "The project's key."},
            "environments": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The environments deleted: edges stop serving them.",
            },
            "keys": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ApiKey"},
                "description": "The keys revoked with them (those already revoked are not listed).",
            },
        }
    ),
    "ProjectList": _list_of("Project"),
    "EnvironmentList": _list_of("Environment"),
    "FlagList": _list_of("Flag"),
    "SegmentList": _list_of("Segment"),
    "ApiKeyList": _list_of("ApiKey"),
    "ManagementToken": _object(
        {
            "id": _UUID,
            "label": {"type": "string"},
            "scope": {"enum": ["read", "write", "admin"]},
            "displayPrefix": {"type": "string"},
            "createdAt": _TIME,
            "revokedAt": {"type": ["string", "null"], "format": "date-time"},
        }
    ),
    "CreatedManagementToken": _object(
        {
            "token": {"$ref": "#/components/schemas/ManagementToken"},
            "secret": {
                "type": ["string", "null"],
                "pattern": "^crv_mgt_",
                "description": "The secret: shown in this response only (null in a replay).",
            },
        }
    ),
    "ManagementTokenList": _list_of("ManagementToken"),
    "FlagSet": {
        "type": "object",
        "description": "The flagd flag set the edge serves for this environment.",
        "required": ["flags", "metadata"],
        "properties": {
            "flags": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["state", "variants", "defaultVariant"],
                    "properties": {
                        "state": {"enum": list(STATES)},
                        "variants": {"type": "object"},
                        "defaultVariant": {"type": ["string", "null"]},
                        "targeting": {"type": "object"},
                        "metadata": {"type": "object"},
                    },
                    "additionalProperties": False,
                },
            },
            "$evaluators": {"type": "object"},
            "metadata": {"type": "object"},
        },
        "additionalProperties": False,
    },
    "ImportReport": _object(
        {
            "environment": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "flags": _object(
                {
                    name: {"type": "array", "items": {"type": "string"}}
                    for name in ("created", "updated", "unchanged")
                }
            ),
            "segments": _object(
                {
                    name: {"type": "array", "items": {"type": "string"}}
                    for name in ("created", "updated")
                }
            ),
            "projectChanges": _object(
                {
                    "flags": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Flags whose variants or metadata changed (or that "
                        "were restored) in every environment.",
                    },
                    "environments": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "The other environments whose flag set changed.",
                    },
                }
            ),
        }
    ),
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": _object({"path": {"type": "string"}, "message": {"type": "string"}}),
            },
            "currentRevision": {"type": ["integer", "null"]},
            "referencedBy": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Health": _object(
        {
            "status": {"enum": ["ok", "failing"]},
            "ready": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
        }
    ),
    **PLAN_SCHEMAS,
    "Readiness": _object(
        {
            "status": {"enum": ["ready", "not ready"]},
            "ready": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "database": {"type": "string"},
            "pendingMigrations": {"type": "array", "items": {"type": "string"}},
        },
        optional=("pendingMigrations",),
    ),
}
