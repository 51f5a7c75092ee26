"""Scopes of management tokens: what a token may do, checked per operation.

- ``read``: the GET operations only.
- ``write``: every operation that changes flags, segments, projects and environments.
- ``admin``: all of that, plus what hands out access: API keys and management tokens.

Each operation declares the scope it needs (``Api.operation(scope=…)``; by default
``read`` for a GET and ``write`` for anything else); the OpenAPI document shows it, and
a token below it gets 403 problem+json naming the scope needed.
"""

from __future__ import annotations

from enum import StrEnum

from aiohttp import web

from control.problems import Handler
from control.state import PRINCIPAL
from crivline.errors import Forbidden


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


def allows(held: Scope, needed: Scope) -> bool:
    return _RANK[held] >= _RANK[needed]


def default_for(method: str) -> Scope:
    return Scope.READ if method == "GET" else Scope.WRITE


def guarded(needed: Scope, handler: Handler) -> Handler:
    """``handler``, refused with 403 to a token whose scope is below ``needed``."""

    async def check(request: web.Request) -> web.StreamResponse:
        held = request[PRINCIPAL].scope
        if not allows(held, needed):
            raise Forbidden(
                f"this operation needs a management token with the {needed.value!r} scope;"
                f" this token's scope is {held.value!r}",
                extra={"requiredScope": needed.value, "tokenScope": held.value},
            )
        return await handler(request)

    return check
