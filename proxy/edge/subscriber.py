"""The one pub/sub subscriber of this process, on the edge Redis's ``changes`` channel.

It turns announcements into cache work (``{"e", "v", "at", "keys"}`` → catch up with
that version; ``{"removed": true}`` → forget the environment) and owns the process's
view of whether Redis is there: when the subscription breaks it marks the edge degraded
at once (requests keep being answered from memory, streams stay open), reconnects with
capped, jittered backoff, and — subscribed again first, so nothing announced from then
on is missed — resynchronises every environment with Redis, which picks up whatever
changed while it was away. A slower periodic resync is the safety net for announcements
lost without a disconnect.

After a session that was established, the first reconnect is tried at once (the backoff
starts over): a Redis that restarted is usually back within a few hundred milliseconds,
and every moment unsubscribed is a moment announcements are lost. A new sync epoch (Redis
was rebuilt and refilled) does not drop the subscription: it wakes the resync at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from crivline import redisconn
from crivline.ioerrors import REDIS_ERRORS
from crivline.keyspace import Keyspace
from crivline.logs import describe, fields
from crivline.tasks import Tasks, cancel_and_wait
from proxy.edge.environments import EnvironmentCache
from proxy.edge.keys import KeyIndex
from proxy.edge.status import EdgeStatus
from proxy.options import ProxyOptions

log = logging.getLogger(__name__)

_QUICK_RESYNC_RETRIES = 3


class Subscriber:
    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        *,
        cache: EnvironmentCache,
        keys: KeyIndex,
        status: EdgeStatus,
        options: ProxyOptions,
        on_connected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._redis = redis
        self._ks = keyspace
        self._cache = cache
        self._keys = keys
        self._status = status
        self._options = options
        self._on_connected = on_connected
        self._tasks = Tasks("subscriber")
        self.connected = asyncio.Event()
        self.resynced = asyncio.Event()  # set after each successful resync
        self.messages = 0
        self.sessions = 0  # subscriptions established since start
        self._kick: str | None = None
        self._cluster = redisconn.is_cluster(redis)
        self._followed: set[str] = set()  # cluster mode: environments whose channel we follow
        self._joined_envs: set[str] = set()
        self._joined = False
        self._resync_now = asyncio.Event()

    def start(self) -> None:
        self._tasks.spawn(self._run(), "subscribe")

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            established = False
            try:
                await self._session()
            except REDIS_ERRORS as exc:
                established = self.connected.is_set()
                self._lost(describe(exc))
            # A session that had been up starts the backoff over: the failures counted
            # before it say nothing about this Redis, and a long wait here is a long
            # window in which announcements are missed.
            failures = 0 if established else failures + 1
            cap = self._options.reconnect_max_seconds
            await asyncio.sleep(min(cap, 0.05 * 2 ** min(failures, 10)) * random.uniform(0.5, 1))

    def _lost(self, error: str) -> None:
        if self._status.redis_up or self.connected.is_set():
            log.warning("redis lost; serving from memory", extra=fields(error=error))
        self.connected.clear()
        self.resynced.clear()
        self._status.redis_lost(error)

    async def _session(self) -> None:
        pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
        resync: asyncio.Task[None] | None = None
        try:
            if self._cluster:
                await self._follow_served(pubsub, set())
                channel = self._ks.edge_changes
                receive = pubsub.get_sharded_message
            else:
                channel = self._ks.changes
                await pubsub.subscribe(channel)
                receive = pubsub.get_message
            self._status.redis_back()
            self.connected.set()
            self.sessions += 1
            log.info("subscribed to changes", extra=fields(channel=channel))
            resync = self._tasks.spawn(self._resync_loop(), "resync", quiet=True)
            self._kick = None
            followed: set[str] = set(self._followed)
            topology = self._topology()
            while True:
                if self._kick is not None:
                    raise ConnectionError(self._kick)
                message = await receive(timeout=1.0)
                if message is not None:
                    self._handle(message)
                if self._cluster and (now := self._topology()) != topology:
                    # A failover: announcements made while a shard had no master are
                    # lost, and its promoted replica may lack the last writes until
                    # syncd rewrites them. Catch up now, not at the next interval.
                    log.info("cluster primaries changed; resynchronising")
                    topology = now
                    self.resync_soon()
                if resync.done():
                    resync.result()  # it only ends when Redis failed: reconnect
                if self._cluster and (self._followed != followed or self._joined):
                    followed = await self._follow_served(pubsub, followed)
        finally:
            if resync is not None and not resync.done():
                await cancel_and_wait(resync)
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
            except REDIS_ERRORS:
                pass

    def _topology(self) -> frozenset[str]:
        """Cluster mode: the primaries the client knows now (in memory, no round trip)."""
        if not self._cluster:
            return frozenset()
        cluster = cast(RedisCluster, self._redis)
        return frozenset(node.name for node in cluster.get_primaries())

    async def _follow_served(self, pubsub: Any, followed: set[str]) -> set[str]:
        """Cluster mode: SSUBSCRIBE to the edge's channel and to the channel of every
        environment the edge serves (each in its environment's slot, so on the shard that
        holds it); SUNSUBSCRIBE from the ones that left."""
        self._joined = False
        served = {
            m.decode() if isinstance(m, bytes) else str(m)
            for m in await self._redis.smembers(self._ks.served)
        }
        wanted = served | set(self._joined_envs)
        self._joined_envs.clear()
        channels = {self._ks.environment_changes(env) for env in wanted}
        if not followed:
            channels.add(self._ks.edge_changes)
        current = {self._ks.environment_changes(env) for env in followed}
        new = sorted(channels - current)
        gone = sorted(current - channels - {self._ks.edge_changes})
        if new:
            await pubsub.ssubscribe(*new)
        if gone:
            await pubsub.sunsubscribe(*gone)
        self._followed = set(wanted)
        return set(wanted)

    def kick(self, why: str) -> None:
        """Drop the subscription and start over (the health monitor saw Redis fail)."""
        self._kick = why

    def resync_soon(self) -> None:
        """Resynchronise now rather than at the next interval (a new sync epoch)."""
        self._resync_now.set()

    async def _resync_loop(self) -> None:
        redis_failures = 0
        while True:
            self._resync_now.clear()
            started = time.monotonic()
            delay = self._options.resync_interval
            try:
                if self._on_connected is not None:
                    await self._on_connected()
                changed = await self._cache.resync()
            except REDIS_ERRORS:
                # Right after Redis restarted, the pool still holds connections to the
                # old server: each fails once and is dropped. Try again at once rather
                # than leave the session to notice (up to a second later) and reconnect.
                redis_failures += 1
                if redis_failures > _QUICK_RESYNC_RETRIES:
                    raise  # the session reconnects
                await asyncio.sleep(0.02)
                continue
            except Exception as exc:
                log.warning("resync incomplete; retrying", extra=fields(error=describe(exc)))
                delay = 1.0
            else:
                redis_failures = 0
                self._joined = self._cluster  # cluster mode: follow what the edge serves now
                self.resynced.set()
                # Every resync_interval: worth an INFO line only when it caught something.
                log.log(
                    logging.INFO if changed else logging.DEBUG,
                    "resynchronised with redis",
                    extra={
                        "fields": {
                            "changed": changed,
                            "environments": len(self._cache),
                            "keys": len(self._keys),
                            "seconds": round(time.monotonic() - started, 3),
                        }
                    },
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._resync_now.wait()

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") not in ("message", "smessage"):
            return
        self.messages += 1
        try:
            body = orjson.loads(message["data"])
            env = str(body["e"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("unreadable announcement", extra=fields(error=describe(exc)))
            return
        if body.get("removed"):
            self._cache.removed(env)
            self._followed.discard(env)
            return
        if self._cluster and env not in self._followed:
            self._joined_envs.add(env)  # a new environment: follow its channel too
            self._joined = True
        try:
            version = int(body["v"])
            at = float(body["at"]) if body.get("at") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("unreadable announcement", extra=fields(error=describe(exc)))
            return
        if body.get("keys"):
            self._keys.clear_negative()
        self._cache.announce(env, version, at)
