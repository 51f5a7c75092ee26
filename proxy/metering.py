"""Counting SDK requests per environment, UTC day and kind, without Redis on the hot path.

A request adds one to a dict entry in this process's memory. Every
``usage_flush_seconds`` (1 s) a background task moves the counts into the edge Redis
(``HINCRBY`` on ``{p}edge:{edge}:usage``, one pipeline), from where syncd hands them to
control (:mod:`syncd.usage`). A flush that fails keeps its counts for the next one, so a
Redis outage or restart loses nothing this process counted; a graceful stop flushes
what is left. A SIGKILLed process loses what it counted since its last flush: at most
one flush interval of its requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, date, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.keyspace import Keyspace
from crivline.logs import fields
from crivline.usage import count_field

log = logging.getLogger("proxy.metering")

_DAY_SECONDS = 86400


class Meter:
    def __init__(self, redis: Redis, keyspace: Keyspace) -> None:
        self._redis = redis
        self._ks = keyspace
        # (environment id, UTC day number, kind) -> requests not yet in Redis
        self._counts: dict[tuple[str, int, str], int] = {}

    def count(self, environment: str, kind: str) -> None:
        """One request of ``kind`` for ``environment``: a dict update, nothing more."""
        entry = (environment, int(time.time()) // _DAY_SECONDS, kind)
        self._counts[entry] = self._counts.get(entry, 0) + 1

    def unflushed(self, environment: str | None = None) -> int:
        """Requests counted here and not yet in Redis (for one environment, or all)."""
        return sum(n for (env, _, _), n in self._counts.items() if environment in (None, env))

    async def flush(self) -> int:
        """Move the counts into the edge Redis; returns how many requests moved."""
        taken, self._counts = self._counts, {}
        if not taken:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (env, day, kind), n in taken.items():
                    pipe.hincrby(self._ks.usage, count_field(env, _date(day), kind), n)
                await pipe.execute()
        except BaseException:
            # Not known to have landed: keep them (a pipeline is all or nothing for us, as
            # HINCRBY never fails on a hash field that holds a number).
            for entry, n in taken.items():
                self._counts[entry] = self._counts.get(entry, 0) + n
            raise
        return sum(taken.values())

    async def run(self, interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    log.info("usage counters unavailable; counting in memory",
                             extra=fields(error=str(exc)))  # fmt: skip
                failing = True

    async def close(self, patience: float) -> None:
        """The graceful stop's last flush (what cannot be written in time is lost)."""
        try:
            async with asyncio.timeout(patience):
                await self.flush()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("usage not flushed at shutdown", extra=fields(
                error=str(exc), requests=self.unflushed()))  # fmt: skip


def _date(day_number: int) -> date:
    return datetime.fromtimestamp(day_number * _DAY_SECONDS, UTC).date()
