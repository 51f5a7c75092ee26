"""The relay loop: Postgres LISTEN → the bus, each environment's versions in order, once.

Notifications are coalesced per environment (only the newest version matters to syncd,
which rebuilds from a snapshot) and published through a Lua script on the bus that
remembers the highest version published per environment (``{p}bus:versions``): a
version is published only if it is newer, so several relays, a reconnect or a sweep
never put the same version on the bus twice.

Notifications sent while the relay was not listening are gone, so every (re)connect —
and then every ``sweep_interval`` — reads every environment's version from the primary
and publishes what the bus has not carried yet. A failed publish ends the connection
like a lost LISTEN does; the sweep after reconnecting republishes what was missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from crivline import redisconn
from crivline.ioerrors import POSTGRES_ERRORS, REDIS_ERRORS
from crivline.keyspace import PG_CHANNEL, Keyspace
from crivline.logs import describe, fields
from crivline.probes import readiness_body
from relay.metrics import RelayMetrics
from syncd.backoff import Backoff, reraise_if_cancelled
from syncd.follow import parse_wakeup

log = logging.getLogger(__name__)

# KEYS: the versions hash. ARGV: environment, version, payload, channel, and the command
# (PUBLISH, or SPUBLISH on a cluster bus, where syncd SSUBSCRIBEs; the versions hash is in
# the channel's slot).
_PUBLISH = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current >= tonumber(ARGV[2]) then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[5], ARGV[4], ARGV[3])
return 1
"""

_SWEEP = """
SELECT id::text AS e, version AS v, tenant_id::text AS t, project_id::text AS p,
       extract(epoch FROM updated_at)::float8 AS at
  FROM environments
"""


class _ConnectionLost(ConnectionError):
    pass


class Relay:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        bus: Redis,
        keyspace: Keyspace,
        *,
        sweep_interval: float = 5.0,
        timeout: float = 10.0,
        backoff_cap: float = 5.0,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.metrics = metrics or RelayMetrics()
        self.connect = connect
        self.bus = bus
        self.keyspace = keyspace
        self.sweep_interval = sweep_interval
        self.timeout = timeout
        self.backoff_cap = backoff_cap
        self._publish = bus.register_script(_PUBLISH)
        self._command = "SPUBLISH" if redisconn.is_cluster(bus) else "PUBLISH"
        self._pending: dict[str, tuple[int, bytes]] = {}
        self._wake = asyncio.Event()
        self._lost = False
        self.published: dict[str, int] = {}  # env -> highest version this relay saw carried
        self.counts = {"published": 0, "duplicate": 0, "invalid": 0, "sweeps": 0}
        self.listening = False
        self.last_sweep: float | None = None  # monotonic time of the last sweep that worked

    # -- notifications -------------------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if not isinstance(payload, str) or (wakeup := parse_wakeup(payload)) is None:
            self._count("invalid")
            return
        self._offer(wakeup.environment, wakeup.version, payload.encode())

    def _offer(self, env: str, version: int, payload: bytes) -> None:
        if version <= self.published.get(env, 0):
            self._count("duplicate")
            return
        pending = self._pending.get(env)
        if pending is None or version > pending[0]:
            self._pending[env] = (version, payload)
            self._wake.set()

    def _count(self, fate: str) -> None:
        self.counts[fate] += 1
        self.metrics.messages.labels(fate).inc()

    def _terminated(self, _conn: Any) -> None:
        self._lost = True
        self._wake.set()

    # -- status ------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """Ready while listening, with a sweep younger than three intervals."""
        reasons = []
        if not self.listening:
            reasons.append("not listening on the primary (see the log: is it reachable?)")
        age = None
        if self.last_sweep is not None:
            age = asyncio.get_running_loop().time() - self.last_sweep
        stale = max(3 * self.sweep_interval, self.sweep_interval + 2.0)
        if age is None or age > stale:
            reasons.append(
                "no sweep of the primary's versions onto the bus has succeeded "
                + ("yet" if age is None else f"for {age:.1f} s")
                + " (is the bus reachable?)"
            )
        return readiness_body(
            reasons,
            listening=self.listening,
            lastSweepAgeSeconds=None if age is None else round(age, 3),
            published=self.counts["published"],
        )

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(base=0.1, cap=self.backoff_cap)
        connected_before = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                self._lost = False
                async with asyncio.timeout(self.timeout):
                    conn = await self.connect()
                    conn.add_termination_listener(self._terminated)
                    await conn.add_listener(PG_CHANNEL, self._notified)
                self.listening = True
                if connected_before:
                    self.metrics.reconnects.inc()
                log.info(
                    "relaying", extra=fields(channel=self.keyspace.bus, again=connected_before)
                )
                connected_before = True
                await self._sweep(conn)  # what was notified while nobody listened
                backoff.reset()
                await self._forward(conn)
            except (*POSTGRES_ERRORS, *REDIS_ERRORS) as exc:
                reraise_if_cancelled()
                delay = backoff.next()
                log.log(
                    logging.WARNING if backoff.attempt == 1 else logging.DEBUG,
                    "relay lost postgres or the bus, reconnecting",
                    extra=fields(error=describe(exc), retry_in=round(delay, 3)),
                )
                await asyncio.sleep(delay)
            finally:
                self.listening = False
                self.metrics.listening.set(0)
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    async def _forward(self, conn: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval
        while True:
            if self._lost:
                raise _ConnectionLost("the listen connection was closed")
            if self._pending:
                await self._flush()
                continue
            try:
                async with asyncio.timeout(max(0.0, next_sweep - loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                await self._sweep(conn)  # also proves the connection is alive
                next_sweep = loop.time() + self.sweep_interval
            self._wake.clear()

    async def _sweep(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(_SWEEP, timeout=self.timeout)
        self.counts["sweeps"] += 1
        self.metrics.sweeps.inc()
        for row in rows:
            doc = {"e": row["e"], "v": row["v"], "t": row["t"], "p": row["p"], "at": row["at"]}
            self._offer(row["e"], row["v"], orjson.dumps(doc))
        await self._flush()
        self.last_sweep = asyncio.get_running_loop().time()
        self.metrics.listening.set(1)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            async with asyncio.timeout(self.timeout):
                async with self.bus.pipeline(transaction=False) as pipe:
                    for env, (version, payload) in batch.items():
                        await self._publish(
                            keys=[self.keyspace.bus_versions],
                            args=[env, version, payload, self.keyspace.bus, self._command],
                            client=pipe,
                        )
                    results = await pipe.execute()
        except BaseException:
            for env, item in batch.items():  # not lost: the next attempt sends them
                if env not in self._pending or self._pending[env][0] < item[0]:
                    self._pending[env] = item
            raise
        for (env, (version, _)), sent in zip(batch.items(), results, strict=True):
            self.published[env] = max(version, self.published.get(env, 0))
            self._count("published" if sent else "duplicate")
