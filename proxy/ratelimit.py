"""Per-key rate limits without a Redis round trip per request.

Each process counts locally, per key and per one-second window, and decides locally:
a request is admitted while (the shared total it last read + what it admitted since)
is under ``CRIVLINE_RATE_LIMIT``. Every ``rate_limit_flush_seconds`` (100 ms) a
background task adds the local counts to shared Redis counters — ``INCRBY`` on
``{p}ratelimit:{key id}:{second}`` with a short TTL, one pipeline for all keys — and
reads back the totals, so the limit holds across every proxy process of the edge
within one flush interval. When Redis is away the limit is enforced per process.

A refused request gets 429 with ``Retry-After`` in whole seconds: the time to the next
window, at least 1.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from crivline.ioerrors import REDIS_ERRORS
from crivline.keyspace import Keyspace
from crivline.logs import describe, fields

log = logging.getLogger(__name__)

_TTL_SECONDS = 3


@dataclass(slots=True)
class _Window:
    second: int
    shared: int = 0  # the edge-wide total last read from Redis (includes our flushed part)
    pending: int = 0  # admitted here since the last flush


class RateLimiter:
    def __init__(self, redis: Redis, keyspace: Keyspace, limit_per_second: int) -> None:
        self._redis = redis
        self._ks = keyspace
        self.limit = limit_per_second
        self._windows: dict[str, _Window] = {}

    def admit(self, key_id: str, now: float | None = None) -> int:
        """0 if the request may proceed, else the Retry-After seconds."""
        limit = self.limit
        if limit <= 0:
            return 0
        now = time.time() if now is None else now
        second = int(now)
        window = self._windows.get(key_id)
        if window is None or window.second != second:
            window = self._windows[key_id] = _Window(second)
        if window.shared + window.pending >= limit:
            return max(1, math.ceil(second + 1 - now))
        window.pending += 1
        return 0

    async def flush(self, at: float | None = None) -> None:
        """Push local counts to the shared counters and read back the totals."""
        now = int(time.time() if at is None else at)
        for key_id in [k for k, w in self._windows.items() if w.second < now - 1]:
            del self._windows[key_id]  # windows that ended: their counts no longer matter
        batch = [(w, w.pending, k) for k, w in self._windows.items() if w.pending]
        if not batch:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for window, sent, key_id in batch:
                name = self._ks.rate_limit(key_id, window.second)
                pipe.incrby(name, sent)
                pipe.expire(name, _TTL_SECONDS)
            results = await pipe.execute()
        for i, (window, sent, _key_id) in enumerate(batch):
            window.pending -= sent  # admitted meanwhile stays pending
            window.shared = max(window.shared, int(results[2 * i]))

    async def run(self, interval: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
                failing = False
            except REDIS_ERRORS as exc:
                if not failing:
                    log.info(
                        "rate-limit counters unavailable; limiting per process",
                        extra=fields(error=describe(exc)),
                    )
                failing = True
                for window in self._windows.values():
                    window.shared += window.pending  # keep counting locally
                    window.pending = 0
