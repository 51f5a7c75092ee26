"""Following changes: Postgres LISTEN on a dedicated connection, and the optional bus.

Both deliver wake-ups naming (environment, version); the callbacks only parse and
enqueue. A lost connection is re-established with jittered backoff, and every
reconnect asks for a reconciliation, because notifications sent while we were away
are gone for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from crivline import redisconn
from crivline.ioerrors import POSTGRES_ERRORS, REDIS_ERRORS
from crivline.keyspace import PG_CHANNEL
from crivline.logs import describe, fields
from crivline.tracing import valid_traceparent
from syncd.backoff import Backoff, reraise_if_cancelled
from syncd.metrics import SyncdMetrics

log = logging.getLogger(__name__)

MAX_PAYLOAD = 8000  # pg_notify's own limit; anything longer is not ours


@dataclass(frozen=True, slots=True)
class Wakeup:
    environment: str
    version: int
    at: float | None
    tenant: str | None
    project: str | None
    received: float  # monotonic
    traceparent: str | None = None  # the write's trace context (W3C), when it was traced


def parse_wakeup(payload: str | bytes, received: float | None = None) -> Wakeup | None:
    """``{"e": env, "v": version, "t": tenant, "p": project, "at": seconds}`` (and
    ``"tp"``, a W3C traceparent, when the write was traced), or None. A malformed
    ``tp`` is dropped, not the wake-up."""
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    env, version, at = doc.get("e"), doc.get("v"), doc.get("at")
    tenant, project = doc.get("t"), doc.get("p")
    if not isinstance(env, str) or not env or len(env) > 64:
        return None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return None
    if not isinstance(at, int | float) or isinstance(at, bool):
        at = None
    return Wakeup(
        environment=env,
        version=version,
        at=float(at) if at is not None else None,
        tenant=tenant if isinstance(tenant, str) else None,
        project=project if isinstance(project, str) else None,
        received=time.monotonic() if received is None else received,
        traceparent=valid_traceparent(doc.get("tp")),
    )


OnWakeup = Callable[[Wakeup, str], None]


class PostgresListener:
    """LISTEN ``crivline_changes`` on a connection of its own (never one from the pool)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        on_wakeup: OnWakeup,
        on_reconnect: Callable[[], None],
        metrics: SyncdMetrics,
        *,
        probe_interval: float = 5.0,
        timeout: float = 10.0,
        backoff_cap: float = 5.0,
    ) -> None:
        self.backoff_cap = backoff_cap
        self.connect = connect
        self.on_wakeup = on_wakeup
        self.on_reconnect = on_reconnect
        self.metrics = metrics
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.listening = False

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        wakeup = parse_wakeup(payload)
        if wakeup is None:
            self.metrics.wakeups.labels("postgres", "invalid").inc()
            return
        self.on_wakeup(wakeup, "postgres")

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=self.backoff_cap)
        connected_before = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await self.connect()
                    lost = asyncio.Event()
                    conn.add_termination_listener(_setter(lost))
                    await conn.add_listener(PG_CHANNEL, self._notified)
                self.listening = True
                backoff.reset()
                if connected_before:
                    self.metrics.reconnects.labels("postgres_listen").inc()
                log.info("listening", extra=fields(channel=PG_CHANNEL, again=connected_before))
                connected_before = True
                self.on_reconnect()
                await self._watch(conn, lost)
            except POSTGRES_ERRORS as exc:
                reraise_if_cancelled()
                delay = backoff.next()
                log.log(
                    logging.WARNING if backoff.attempt == 1 else logging.DEBUG,
                    "postgres listen connection lost, reconnecting",
                    extra=fields(error=describe(exc), retry_in=round(delay, 3)),
                )
                self.listening = False
                await asyncio.sleep(delay)
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return (by raising) only when the connection is gone; probe it now and then,
        because a peer that vanished without closing the socket is otherwise never noticed."""
        while True:
            try:
                async with asyncio.timeout(self.probe_interval):
                    await lost.wait()
            except TimeoutError:
                await conn.execute("SELECT 1", timeout=self.timeout)
                continue
            raise ConnectionError("the listen connection was closed")


class BusListener:
    """SUBSCRIBE to the central bus (``{p}bus``) on ``CRIVLINE_BUS_URL`` (SSUBSCRIBE on a
    cluster)."""

    def __init__(
        self,
        bus: Redis,
        channel: str,
        on_wakeup: OnWakeup,
        on_reconnect: Callable[[], None],
        metrics: SyncdMetrics,
        *,
        backoff_cap: float = 5.0,
    ) -> None:
        self.backoff_cap = backoff_cap
        self.bus = bus
        self.channel = channel
        self.on_wakeup = on_wakeup
        self.on_reconnect = on_reconnect
        self.metrics = metrics
        self.subscribed = False

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=self.backoff_cap)
        connected_before = False
        while True:
            pubsub: Any = self.bus.pubsub(ignore_subscribe_messages=True)
            # A cluster bus carries the channel as a sharded one (SPUBLISH/SSUBSCRIBE):
            # on the shard of its slot, not broadcast to every node.
            sharded = redisconn.is_cluster(self.bus)
            try:
                if sharded:
                    await pubsub.ssubscribe(self.channel)
                else:
                    await pubsub.subscribe(self.channel)
                self.subscribed = True
                backoff.reset()
                if connected_before:
                    self.metrics.reconnects.labels("bus").inc()
                log.info("subscribed to the bus", extra=fields(channel=self.channel))
                connected_before = True
                self.on_reconnect()
                while True:
                    if sharded:
                        message = await pubsub.get_sharded_message(timeout=1.0)
                    else:
                        message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") not in ("message", "smessage"):
                        continue
                    wakeup = parse_wakeup(message["data"])
                    if wakeup is None:
                        self.metrics.wakeups.labels("bus", "invalid").inc()
                        continue
                    self.on_wakeup(wakeup, "bus")
            except REDIS_ERRORS as exc:
                reraise_if_cancelled()
                delay = backoff.next()
                log.log(
                    logging.WARNING if backoff.attempt == 1 else logging.DEBUG,
                    "bus connection lost, reconnecting",
                    extra=fields(error=describe(exc), retry_in=round(delay, 3)),
                )
                self.subscribed = False
                await asyncio.sleep(delay)
            finally:
                self.subscribed = False
                await _close_pubsub(pubsub)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


async def _close_pubsub(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except REDIS_ERRORS:
        pass
