"""Management-token authentication for ``/api/v1``.

``Authorization: Bearer crv_mgt_…`` is looked up by its SHA-256 among live tokens; the
token's tenant then scopes everything the request can touch. This lookup is the one
query that is not tenant-scoped: it is how the tenant is found. No cache, so a revoked
token stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from control.problems import Handler
from control.scopes import Scope
from control.state import POOL, PRINCIPAL
from crivline import tokens
from crivline.errors import Unauthorized

API_PREFIX = "/api/v1"
ACQUIRE_TIMEOUT = 10.0  # a starved pool answers 503 rather than hanging the request

# Through the one function control's role may look tokens up with (no tenant is known
# yet, so row-level security would show it nothing): migration 0005.
_LOOKUP = """
SELECT id::text AS id, tenant_id::text AS tenant_id, display_prefix, label, scope
  FROM crivline_management_token($1)
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a management token of one tenant."""

    tenant_id: str
    token_id: str
    actor: str  # written to audit rows and updated_by: never the secret
    scope: Scope


def _challenge(error: str | None = None) -> dict[str, str]:
    value = 'Bearer realm="crivline"'
    if error is not None:
        value += f', error="{error}"'
    return {"WWW-Authenticate": value}


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is None:
        raise Unauthorized(
            "send a management token: Authorization: Bearer crv_mgt_…", headers=_challenge()
        )
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized(
            "the Authorization header must be: Bearer <management token>",
            headers=_challenge("invalid_request"),
        )
    return credentials.strip()


async def authenticate(request: web.Request) -> Principal:
    secret = _bearer(request)
    row = None
    if tokens.kind_of(secret) is tokens.SecretKind.MANAGEMENT:
        async with request.app[POOL].acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            row = await conn.fetchrow(_LOOKUP, tokens.digest(secret))
    if row is None:
        # Unknown, revoked, or an API key sent to the management API: all the same to us.
        raise Unauthorized(
            "the management token is not valid (unknown or revoked)",
            headers=_challenge("invalid_token"),
        )
    label = f" ({row['label']})" if row["label"] else ""
    return Principal(
        tenant_id=row["tenant_id"],
        token_id=row["id"],
        actor=f"token:{row['display_prefix']}{label}",
        scope=Scope(row["scope"]),
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/"):
        request[PRINCIPAL] = await authenticate(request)
    return await handler(request)
