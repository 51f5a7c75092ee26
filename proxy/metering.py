"""Counting SDK requests per environment, UTC day and kind, without Redis on the hot path.

A request adds one to a dict entry in this process's memory. Every
``usage_flush_seconds`` (1 s) a background task moves the counts into the edge Redis
in one transaction: ``HINCRBY`` on ``{p}edge:{edge}:usage`` (what syncd hands to
control, :mod:`syncd.usage`) and, for evaluations, on ``{p}edge:{edge}:pending`` (per
tenant and day: counted at this edge, not yet in control's total) — and reads back, in
the same transaction, control's totals of today and the edge's pending counts, which
:mod:`proxy.quota` compares against each plan's daily limit.

A flush that fails keeps its counts for the next one, so a Redis outage loses nothing
this process counted; a graceful stop flushes what is left. A SIGKILLed process loses
what it counted since its last flush: at most one flush interval of its requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.keyspace import Keyspace
from crivline.logs import fields
from crivline.plans import EVALUATION_KINDS
from crivline.tasks import every
from crivline.usage import count_field, pending_field

log = logging.getLogger(__name__)

_DAY_SECONDS = 86400
_EVALUATIONS = frozenset(EVALUATION_KINDS)
_IDLE_READ = 3.0  # seconds between reads of the totals while nothing is counted


@dataclass(slots=True)
class EdgeTotals:
    """What the edge knew at the last flush: per tenant, today's evaluations counted
    centrally plus those counted at this edge and not yet central."""

    day: int = -1  # UTC day number
    used: dict[str, int] = field(default_factory=dict)


def day_number(now: float) -> int:
    """The UTC day of ``now`` (epoch seconds) as a number: days since 1970-01-01."""
    return int(now) // _DAY_SECONDS


def today() -> int:
    return int(time.time()) // _DAY_SECONDS


def _date(day_number: int) -> date:
    return datetime.fromtimestamp(day_number * _DAY_SECONDS, UTC).date()


class Meter:
    def __init__(self, redis: Redis, keyspace: Keyspace, *, enabled: bool = True) -> None:
        self.enabled = enabled  # off only to measure metering's cost (CRIVLINE_METERING)
        self._redis = redis
        self._ks = keyspace
        # (environment id, UTC day number, kind) -> requests not yet in Redis
        self._counts: dict[tuple[str, int, str], int] = {}
        # (tenant id, UTC day number) -> evaluations not yet in Redis
        self._evaluations: dict[tuple[str, int], int] = {}
        self._in_flight: dict[tuple[str, int], int] = {}  # being written by a flush
        self.totals = EdgeTotals()
        self._read_at = 0.0  # when the totals were last read

    def count(self, environment: str, kind: str, tenant: str = "", day: int | None = None) -> None:
        """One request of ``kind`` for ``environment`` on UTC ``day`` (default: today):
        dict updates, nothing more."""
        if not self.enabled:
            return
        if day is None:
            day = today()
        entry = (environment, day, kind)
        self._counts[entry] = self._counts.get(entry, 0) + 1
        if kind in _EVALUATIONS and tenant:
            mine = (tenant, day)
            self._evaluations[mine] = self._evaluations.get(mine, 0) + 1

    def unflushed(self, environment: str | None = None) -> int:
        """Requests counted here and not yet in Redis (for one environment, or all)."""
        return sum(n for (env, _, _), n in self._counts.items() if environment in (None, env))

    def used_today(self, tenant: str, now: float) -> int:
        """The tenant's evaluations of today as far as this process knows: the edge's
        total at the last flush and what this process admitted since."""
        return self.used_on(tenant, day_number(now))

    def used_on(self, tenant: str, day: int) -> int:
        """:meth:`used_today` for a UTC day number the caller already has."""
        known = self.totals.used.get(tenant, 0) if self.totals.day == day else 0
        mine = (tenant, day)
        return known + self._evaluations.get(mine, 0) + self._in_flight.get(mine, 0)

    async def flush(self) -> int:
        """Move the counts into the edge Redis and read the totals back; returns how many
        requests moved."""
        now = time.time()
        day = day_number(now)
        if not self._counts and self.totals.day == day and now - self._read_at < _IDLE_READ:
            # Idle: nothing to move; the totals are read less often (fewer Redis calls).
            return 0
        taken, self._counts = self._counts, {}
        # Counted as in flight until the totals read back include them (or they return
        # to the unflushed counts): a decision taken meanwhile must still see them.
        evaluations, self._evaluations = self._evaluations, {}
        self._in_flight = evaluations
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for (env, d, kind), n in taken.items():
                    pipe.hincrby(self._ks.usage, count_field(env, _date(d), kind), n)
                for (tenant, d), n in evaluations.items():
                    pipe.hincrby(self._ks.usage_pending, pending_field(tenant, _date(d)), n)
                pipe.hgetall(self._ks.usage_today)
                pipe.hgetall(self._ks.usage_pending)
                results = await pipe.execute()
        except BaseException:
            # Not known to have landed: keep them for the next flush.
            for entry, n in taken.items():
                self._counts[entry] = self._counts.get(entry, 0) + n
            for mine, n in evaluations.items():
                self._evaluations[mine] = self._evaluations.get(mine, 0) + n
            raise
        finally:
            self._in_flight = {}
        self.totals = _totals(results[-2], results[-1], _date(day).isoformat(), day)
        self._read_at = now
        return sum(taken.values())

    async def run(self, interval: float) -> None:
        await every(
            interval,
            self.flush,
            logger=log,
            unavailable="usage counters unavailable; counting in memory",
        )

    async def close(self, patience: float) -> None:
        """The graceful stop's last flush (what cannot be written in time is lost)."""
        try:
            async with asyncio.timeout(patience):
                await self.flush()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("usage not flushed at shutdown", extra=fields(
                error=str(exc), requests=self.unflushed()))  # fmt: skip


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _totals(central: Any, pending: Any, today: str, day: int) -> EdgeTotals:
    """Control's totals (counted only when they are of ``today``) + the edge's pending."""
    used: dict[str, int] = {}
    given = {_text(k): _text(v) for k, v in central.items()}
    if given.get("day") == today:
        for name, total in given.items():
            if name != "day":
                used[name] = int(total)
    suffix = f"|{today}"
    for name, count in pending.items():
        text = _text(name)
        if text.endswith(suffix):
            tenant = text[: -len(suffix)]
            used[tenant] = used.get(tenant, 0) + max(0, int(count))
    return EdgeTotals(day, used)
