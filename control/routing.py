"""Routes declared once, with what the OpenAPI document says about them.

Each handler is registered with :meth:`Api.operation`, naming its request body, the
parameters and headers it reads, its answers and the problems it can return. The app's
router and ``/openapi.json`` are both built from these declarations, and the contract
test (schemathesis) checks that the server keeps what they promise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from control.bodies import Body
from control.scopes import Scope, default_for, guarded
from crivline import httpserver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented successful answer."""

    status: int
    description: str
    schema: str | None = None  # a name in components/schemas
    headers: tuple[str, ...] = ()  # names in components/headers
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    replies: tuple[Reply, ...]
    problems: tuple[int, ...] = ()  # error statuses answered with problem+json
    body: Body | None = None
    body_schema: str | None = None  # a components/schemas body that is not a Body spec
    query: tuple[str, ...] = ()  # names in components/parameters
    headers: tuple[str, ...] = ()  # request headers, names in components/parameters
    authenticated: bool = True
    description: str = ""
    # A route outside the management token's (authenticated=False) that checks another
    # credential itself: the name of its security scheme in the document.
    security: str | None = None
    scope: Scope | None = None  # what a management token needs; None when unauthenticated


class Api:
    """Collects the operations of one group of routes under a path prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        summary: str,
        tag: str,
        replies: tuple[Reply, ...],
        problems: tuple[int, ...] = (),
        body: Body | None = None,
        body_schema: str | None = None,
        query: tuple[str, ...] = (),
        headers: tuple[str, ...] = (),
        authenticated: bool = True,
        description: str = "",
        security: str | None = None,
        scope: Scope | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method,
                    self.prefix + path,
                    handler,
                    operation_id,
                    summary,
                    tag,
                    replies,
                    problems,
                    body,
                    body_schema,
                    query,
                    headers,
                    authenticated,
                    description or (handler.__doc__ or "").strip(),
                    security,
                    (scope or default_for(method)) if authenticated else None,
                )
            )
            return handler

        return register


def add_routes(app: web.Application, operations: list[Operation]) -> None:
    for op in operations:
        handler = op.handler if op.scope is None else guarded(op.scope, op.handler)
        # No implicit HEAD: the app serves exactly the methods its document lists.
        # Expect: 100-continue only (aiohttp's default answers 500 to one not in UTF-8).
        if op.method == "GET":
            app.router.add_get(
                op.path, handler, allow_head=False, expect_handler=httpserver.expect_continue
            )
        else:
            app.router.add_route(
                op.method, op.path, handler, expect_handler=httpserver.expect_continue
            )
    httpserver.refuse_unmatched(app)
