"""Strict JSON request bodies: what each accepts, as one declaration that both checks
bodies and describes them in the OpenAPI document.

A request is refused with

- 415 when it has a body that is not ``application/json`` (or a ``+json`` type),
- 413 when the body is over ``CRIVLINE_MAX_BODY_BYTES``,
- 408 when it does not arrive within 30 s, 400 when it cannot be decoded,
- 400 when it is not JSON, or does not have the declared shape — wrong types, missing
  fields and unknown fields (never silently ignored) are each reported with their path,
- 422 when it holds a NUL character (U+0000), which Postgres cannot store.

Semantic checks (is this targeting valid for this flag?) come later, and answer 422.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from control.state import SETTINGS
from crivline import httpserver, strictjson
from crivline.errors import (
    BadRequest,
    FieldProblem,
    Unprocessable,
    UnsupportedMediaType,
)

Kind = Literal["string", "boolean", "object", "date-time", "any-json"]

_JSON_TYPES: dict[Kind, Any] = {
    "string": "string",
    "boolean": "boolean",
    "object": "object",
    "date-time": "string",
}


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 date-time (with its offset), in UTC; ValueError says what is wrong."""
    try:
        # RFC 3339 allows a lowercase t and z, and a leap second (Python has none).
        parsed = datetime.fromisoformat(value.upper().replace(":60", ":59"))
    except ValueError:
        raise ValueError(
            "must be an RFC 3339 date-time, for example 2030-01-01T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError("must include a time zone offset, for example Z or +02:00")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the range of dates this API stores") from None


def _matches(pattern: str, value: str) -> bool:
    """JSON Schema (ECMA-262) ``pattern`` semantics: unlike Python's, ``$`` does not
    match before a trailing newline."""
    found = re.search(pattern, value)
    return found is not None and (not pattern.endswith("$") or found.end() == len(value))


@dataclass(frozen=True, slots=True)
class Field:
    kind: Kind
    required: bool = False
    nullable: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {}
        if self.kind != "any-json":
            kind = _JSON_TYPES[self.kind]
            schema["type"] = [kind, "null"] if self.nullable else kind
        if self.kind == "date-time":
            schema["format"] = "date-time"
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.min_length is not None:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.choices is not None:
            schema["enum"] = [*self.choices, *([None] if self.nullable else [])]
        if self.description:
            schema["description"] = self.description
        return schema

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None when it does."""
        if value is None:
            return None if self.nullable else f"must be {self._noun()}, not null"
        if self.kind == "any-json":
            return None
        if self.kind == "boolean":
            return None if isinstance(value, bool) else f"must be {self._noun()}"
        if self.kind == "object":
            return None if isinstance(value, dict) else f"must be {self._noun()}"
        if not isinstance(value, str):
            return f"must be {self._noun()}"
        return self._string_problem(value)

    def _string_problem(self, value: str) -> str | None:
        if self.min_length is not None and len(value) < self.min_length:
            return f"must be at least {self.min_length} characters long"
        if self.max_length is not None and len(value) > self.max_length:
            return f"must be at most {self.max_length} characters long"
        if self.pattern is not None and not _matches(self.pattern, value):
            return f"must match {self.pattern}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        if self.kind == "date-time":
            try:
                parse_datetime(value)
            except ValueError as exc:
                return str(exc)
        return None

    def _noun(self) -> str:
        nouns = {
            "string": "a string",
            "boolean": "true or false",
            "object": "a JSON object",
            "date-time": "an RFC 3339 date-time string",
            "any-json": "a JSON value",
        }
        return nouns[self.kind] + (" or null" if self.nullable else "")


@dataclass(frozen=True, slots=True)
class Body:
    """The fields a JSON object body may have. Anything else is refused."""

    name: str
    fields: Mapping[str, Field]
    description: str = ""
    examples: tuple[Mapping[str, Any], ...] = field(default=())

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: f.json_schema() for name, f in self.fields.items()},
        }
        required = [name for name, f in self.fields.items() if f.required]
        if required:
            schema["required"] = required
        if self.description:
            schema["description"] = self.description
        if self.examples:
            schema["examples"] = [dict(e) for e in self.examples]
        return schema

    def check(self, document: Any) -> dict[str, Any]:
        """``document`` when it has this shape; else 400 listing every problem."""
        if not isinstance(document, dict):
            raise BadRequest("the request body must be a JSON object")
        problems = [
            FieldProblem(name, "is required")
            for name, f in self.fields.items()
            if f.required and name not in document
        ]
        for name, value in document.items():
            spec = self.fields.get(name)
            if spec is None:
                problems.append(FieldProblem(name, f"is not a field of {self.name}"))
            elif (reason := spec.problem(value)) is not None:
                problems.append(FieldProblem(name, reason))
        if problems:
            raise BadRequest(f"the body is not a valid {self.name}", problems=problems)
        return document


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_bytes(request: web.Request) -> bytes:
    """The raw body, within the size limit (413 beyond it)."""
    limit = request.app[SETTINGS].max_body_bytes
    return await httpserver.read_body(request, limit, httpserver.BODY_SECONDS)


def _nul_path(value: Any, path: str) -> str | None:
    """Where a NUL character hides in ``value``: Postgres text and jsonb cannot hold one."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return here
            if (found := _nul_path(item, here)) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _nul_path(item, f"{path}[{i}]")) is not None:
                return found
    return None


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The parsed JSON body (None for an empty body when ``optional``)."""
    raw = await read_bytes(request)
    if not raw:
        if optional:
            return None
        raise BadRequest("a JSON request body is required")
    if not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"the body must be application/json, not {request.content_type or 'untyped'}",
            headers={"Accept-Post": "application/json"},
        )
    try:
        document = strictjson.loads(raw)
    except strictjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except strictjson.DuplicateKey as exc:
        raise BadRequest(
            f"the body is ambiguous: a JSON object has the key {exc.key!r} more than once"
        ) from None
    if (where := _nul_path(document, "")) is not None:
        # Well-formed JSON that Postgres cannot store (text and jsonb refuse U+0000).
        raise Unprocessable(
            "the body contains a NUL character (\\u0000), which cannot be stored",
            problems=[FieldProblem(where, "contains a NUL character")],
        )
    return document


async def parse(request: web.Request, body: Body) -> dict[str, Any]:
    """Read and check a body declared by ``body``."""
    return body.check(await read_json(request))
