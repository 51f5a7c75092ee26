"""Stream tickets: short-lived, HMAC-signed stand-ins for an API key in a stream URL.

A browser's ``EventSource`` cannot send headers, so the OFREP bulk response advertises
its event stream as a URL carrying a ticket — never the key itself. A ticket names the
environment, the key (by its SHA-256, so revoking the key also kills its tickets and
their streams), the flag set's version the client had just been served (a stream opened
after a newer change of the flag set is told to refetch at once) and an expiry.

Tickets are deterministic within a window (``ticket_window_seconds``, 15 min by
default) and stay valid until the end of the *next* window, so any ticket is good for at
least one window and at most two; a bulk response's bytes (and so its cache entry) do
not change between requests in the same window.

Format: ``base64url(payload) "." base64url(HMAC-SHA256(k, payload)[:16])`` with
``payload = tag(1) env-uuid(16) key-sha256(32) version(8) expires(4)``.

The signing key: HMAC-SHA256 of ``CRIVLINE_TICKET_SECRET`` when it is set. When it is
not, the proxies of an edge share a random secret kept in Redis (keyspace
``ticket_secret``): the first process stores its proposal with SET NX, every other
process adopts what is there. That makes tickets valid across ``--workers`` and across
proxy hosts of one edge. After a Redis flush the next process to notice stores its own
secret again; a process that has to switch keeps accepting the previous one.

:class:`SharedSecret` reads that secret: during start-up, before the process accepts a
connection (bounded by the Redis timeout), after every reconnection, and — single-flight
— when a ticket reaches a process that does not hold a secret yet (start-up could not
reach Redis). A fresh process therefore verifies tickets from its first request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from crivline.ioerrors import REDIS_ERRORS
from crivline.keyspace import Keyspace
from crivline.tasks import cancel_and_wait

_TAG = 1
_PAYLOAD = struct.Struct(">B16s32sQI")
_MAC_BYTES = 16
_CONTEXT = b"crivline/proxy/stream-ticket/v1"


@dataclass(frozen=True, slots=True)
class Ticket:
    environment: str
    key_hash: str
    version: int
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TicketSigner:
    def __init__(self, window_seconds: int = 900) -> None:
        self.window = window_seconds
        self._keys: list[bytes] = []  # the signing key first, then ones still accepted
        self.secret: bytes | None = None  # the secret behind the signing key

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def use_secret(self, secret: bytes) -> None:
        """Sign with ``secret`` from now on; keep accepting the previous one."""
        key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()
        self.secret = secret
        if self._keys and self._keys[0] == key:
            return
        self._keys = [key, *[k for k in self._keys if k != key]][:2]

    def expiry(self, now: float) -> int:
        return (int(now) // self.window + 2) * self.window

    def issue(self, environment: str, key_hash: str, version: int, now: float) -> str | None:
        """A ticket, or None when this process has no secret yet or ids are not uuids."""
        if not self._keys:
            return None
        try:
            env = uuid.UUID(environment).bytes
            digest = bytes.fromhex(key_hash)
        except ValueError:
            return None
        if len(digest) != 32:
            return None
        payload = _PAYLOAD.pack(_TAG, env, digest, version, self.expiry(now))
        mac = hmac.new(self._keys[0], payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return f"{_b64(payload)}.{_b64(mac)}"

    def verify(self, ticket: str, now: float) -> Ticket | None:
        """The ticket's content if it is authentic and not expired, else None."""
        if not self._keys or ticket.count(".") != 1 or len(ticket) > 256:
            return None
        payload_text, mac_text = ticket.split(".")
        try:
            payload = _unb64(payload_text)
            mac = _unb64(mac_text)
        except ValueError:
            return None
        if len(payload) != _PAYLOAD.size or len(mac) != _MAC_BYTES:
            return None
        if not any(
            hmac.compare_digest(hmac.new(k, payload, hashlib.sha256).digest()[:_MAC_BYTES], mac)
            for k in self._keys
        ):
            return None
        tag, env, digest, version, expires = _PAYLOAD.unpack(payload)
        if tag != _TAG or now >= expires:
            return None
        return Ticket(str(uuid.UUID(bytes=env)), digest.hex(), version, expires)


async def adopt_shared_secret(redis: Redis, keyspace: Keyspace, signer: TicketSigner) -> None:
    """Store our secret (or a new random one) in Redis unless one is there, then sign with
    what is there — after a flush, the first process back restores the edge's secret."""
    name = keyspace.ticket_secret
    proposal = signer.secret or secrets.token_hex(32).encode()
    await redis.set(name, proposal, nx=True)
    stored = await redis.get(name)
    if stored:
        signer.use_secret(stored if isinstance(stored, bytes) else str(stored).encode())


class SharedSecret:
    """The edge's shared ticket secret, read into ``signer`` (one read at a time)."""

    def __init__(self, redis: Redis, keyspace: Keyspace, signer: TicketSigner) -> None:
        self._redis = redis
        self._keyspace = keyspace
        self._signer = signer
        self._loading: asyncio.Task[None] | None = None

    async def adopt(self) -> None:
        """Read (or first store) the edge's secret; Redis errors are the caller's."""
        await adopt_shared_secret(self._redis, self._keyspace, self._signer)

    async def ensure(self, within: float) -> bool:
        """Whether the signer holds a secret, reading it first if it does not (at most
        ``within`` seconds; concurrent callers share one read)."""
        if self._signer.ready:
            return True
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load())
        try:
            await asyncio.wait_for(asyncio.shield(self._loading), within)
        except TimeoutError:
            pass
        return self._signer.ready

    async def _load(self) -> None:
        try:
            await self.adopt()
        except REDIS_ERRORS:
            pass  # Redis is unreachable: the caller says "retry"

    async def close(self) -> None:
        if self._loading is not None:
            await cancel_and_wait(self._loading)
