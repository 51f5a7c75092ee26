"""``Idempotency-Key`` for POSTs: a retried request gets the first answer, and changes
nothing.

The key is claimed inside the write's own transaction, before the change: a row is
inserted for (tenant, key) and filled with the response just before the commit. So

- the first request's change and its recorded response commit together, or neither does
  (a failed request leaves no trace, and a retry runs it again);
- a second request with the same key, while the first is still running, waits on the
  row (Postgres' unique index) and then replays the committed response;
- the same key with a different request (method, path or body) is refused with 422, as
  the IETF draft ``draft-ietf-httpapi-idempotency-key-header`` recommends.

Replays carry ``Idempotent-Replayed: true``. Keys are kept for 24 hours. A response
carrying a secret (a new API key) is recorded without it: secrets are never stored, so
a replay answers with the key's record and ``"key": null``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from crivline import strictjson
from crivline.errors import BadRequest, Unprocessable
from crivline.logs import describe, fields

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
RETENTION_HOURS = 24
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    fingerprint: bytes  # SHA-256 of method, path with query, and the body's canonical form


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=self.body,
            content_type="application/json",
            headers={**self.headers, REPLAYED_HEADER: "true"},
        )


def from_request(request: web.Request, body: bytes) -> IdempotencyKey | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
        raise BadRequest(f"{HEADER} must be 1 to 255 printable ASCII characters")
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.rel_url.raw_path_qs.encode(), _canonical(body)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return IdempotencyKey(key, digest.digest())


def _canonical(body: bytes) -> bytes:
    """A JSON body as sorted, compact JSON, so the same request with its keys in another
    order or other white space is the same request; anything else as it is (it will be
    refused by the route, and failed requests are not recorded)."""
    try:
        return strictjson.canonical(strictjson.loads(body))
    except (strictjson.JSONDecodeError, strictjson.DuplicateKey):
        return body


_CLAIM = """
INSERT INTO idempotency_keys (tenant_id, key, request_hash, response_status, response_body)
VALUES ($1, $2, $3, 0, 'null') ON CONFLICT (tenant_id, key) DO NOTHING RETURNING true
"""
_EXISTING = f"""
SELECT request_hash, response_status, response_body,
       created_at < now() - interval '{RETENTION_HOURS} hours' AS expired
  FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 FOR UPDATE
"""
_RECLAIM = """
UPDATE idempotency_keys SET request_hash = $3, response_status = 0, response_body = 'null',
                            created_at = now()
 WHERE tenant_id = $1 AND key = $2
"""
_RECORD = """
UPDATE idempotency_keys SET response_status = $3, response_body = $4::jsonb
 WHERE tenant_id = $1 AND key = $2
"""


async def claim(
    conn: asyncpg.Connection, tenant_id: str, key: IdempotencyKey
) -> StoredResponse | None:
    """None when this request is the key's first (go ahead); else the answer to replay."""
    if await conn.fetchval(_CLAIM, tenant_id, key.key, key.fingerprint):
        return None
    row = await conn.fetchrow(_EXISTING, tenant_id, key.key)
    if row is None or row["expired"]:
        await conn.execute(_RECLAIM, tenant_id, key.key, key.fingerprint)
        return None
    if bytes(row["request_hash"]) != key.fingerprint:
        raise Unprocessable(
            f"this {HEADER} was already used for a different request;"
            " use a new key for a new request"
        )
    stored = row["response_body"]
    return StoredResponse(row["response_status"], stored["body"].encode(), stored["headers"])


async def record(
    conn: asyncpg.Connection,
    tenant_id: str,
    key: IdempotencyKey,
    status: int,
    body: Any,
    headers: dict[str, str],
) -> None:
    # The body is kept as its exact JSON text, so a replay is byte for byte the same.
    stored = {"body": orjson.dumps(body).decode(), "headers": headers}
    await conn.execute(_RECORD, tenant_id, key.key, status, stored)


async def purge_expired(pool: asyncpg.Pool, every: float = 3600.0) -> None:
    """Forever: delete keys past their retention (runs as a background task)."""
    while True:
        try:
            async with pool.acquire() as conn:
                # Across tenants: through the one function control may do that with.
                deleted = await conn.fetchval(
                    "SELECT crivline_purge_idempotency_keys(make_interval(hours => $1))",
                    RETENTION_HOURS,
                )
            log.debug("purged idempotency keys", extra=fields(result=deleted))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("idempotency purge failed", extra=fields(error=describe(exc)))
        await asyncio.sleep(every)
