"""The plan's cap on concurrent streams per environment, across every proxy process of
an edge (``streamsPerEnvironment``; DESIGN §9).

Each process counts the streams it holds open per environment in memory (an explicit
increment when a stream is served, a decrement when it ends, whatever the reason) and
every ``usage_flush_seconds`` (1 s) writes them into the edge hash
``{p}edge:{edge}:streams`` as its own field — ``{process id}`` →
``{unix ms}|{JSON env → count}`` — and reads the whole hash back in the same
transaction. A field is a heartbeat: one not rewritten for ``STALE_SECONDS`` belongs to
a process that died without saying so (SIGKILL, a lost host), and whichever process
reads it first deletes it (the periodic clean-up), so a crashed process cannot leave the
counts inflated for longer than that. A graceful stop deletes its own field; the whole
hash expires when no process writes it any more.

The decision is taken from memory: the other processes' counts as last read plus this
process's own, now. A new stream (SDK or OFREP) over the plan's cap is 429 with
``Retry-After`` — a problem+json (``type`` ``urn:crivline:problem:stream-limit``,
``limit``, ``plan``) on ``/sdk``, the OFREP error shape (``errorCode``
``STREAM_LIMIT``) on ``/ofrep`` — and streams already open stay open. A tenant whose
plan is not known yet, a plan without a cap and ``CRIVLINE_QUOTAS=off`` never refuse.

Bound: other processes are seen as of their last write (≤ 1 s old) and within a process
a stream counts from the moment it is served, so an edge can overshoot the cap by the
streams its processes open within about one second (processes × stream-open rate ×
1 s); a crashed process's streams hold capacity for at most ``STALE_SECONDS``. This is
separate from the per-process guards of :mod:`proxy.fairness`, which apply as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import orjson
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.logs import fields
from crivline.tasks import every
from proxy.edge.keys import KeyInfo
from proxy.errors import error_response
from proxy.quota import PlanBook

log = logging.getLogger(__name__)

T = TypeVar("T")

STALE_SECONDS = 10.0  # a heartbeat older than this is a dead process's (clock skew included)
RETRY_SECONDS = 5  # Retry-After of a refused stream: streams end at unpredictable times
STREAM_LIMIT_PROBLEM = "urn:crivline:problem:stream-limit"


def parse_field(raw: bytes | str) -> tuple[float, dict[str, int]] | None:
    """``(written at, env → count)`` of one process's field; None when damaged."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    stamp, _, body = text.partition("|")
    try:
        counts = orjson.loads(body)
        at = int(stamp) / 1000
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(counts, dict):
        return None
    return at, {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and v > 0}


class EdgeStreams:
    def __init__(
        self, redis: Redis, key: str, plans: PlanBook, *, enforce: bool, process: str = ""
    ) -> None:
        self._redis = redis
        self._key = key
        self._plans = plans
        self.enforce = enforce
        self.process = process or uuid.uuid4().hex
        self.mine: dict[str, int] = {}  # env -> streams this process holds open
        self.others: dict[str, int] = {}  # env -> other live processes' streams, last read
        self._written = False  # whether our field may be in Redis

    # -- the hot path -------------------------------------------------------------------

    def open_on_edge(self, environment: str) -> int:
        return self.others.get(environment, 0) + self.mine.get(environment, 0)

    def refusal(self, info: KeyInfo, *, ofrep: bool) -> web.Response | None:
        """None when the key's environment may open one more stream; else the 429."""
        if not self.enforce:
            return None
        plan = self._plans.plan(info.tenant)
        if plan is None or plan.streams_per_environment is None:
            return None
        limit = plan.streams_per_environment
        if self.open_on_edge(info.environment) < limit:
            return None
        detail = (
            f"this environment already has {limit} open streams on this edge, the {plan.tier}"
            " plan's maximum; close one or upgrade the plan"
        )
        headers = {"Retry-After": str(RETRY_SECONDS)}
        if ofrep:
            return error_response(429, detail, code="STREAM_LIMIT", headers=headers)
        body = {
            "type": STREAM_LIMIT_PROBLEM, "title": "Too many open streams", "status": 429,
            "detail": detail, "plan": plan.tier, "limit": limit,
        }  # fmt: skip
        return web.Response(
            status=429, body=orjson.dumps(body), content_type="application/problem+json",
            headers=headers,
        )  # fmt: skip

    async def held(self, environment: str, serving: Awaitable[T]) -> T:
        """Await ``serving`` (a stream being served) counted as one open stream."""
        self.mine[environment] = self.mine.get(environment, 0) + 1
        try:
            return await serving
        finally:
            left = self.mine.get(environment, 0) - 1
            if left > 0:
                self.mine[environment] = left
            else:
                self.mine.pop(environment, None)

    # -- the background loop ------------------------------------------------------------

    async def refresh(self) -> None:
        """Write this process's heartbeat, read everyone's, delete the dead ones'."""
        now = time.time()
        if self.mine or self._written:
            self._written = True  # a write that fails may still have landed
            async with self._redis.pipeline(transaction=True) as pipe:
                if self.mine:
                    value = f"{int(now * 1000)}|".encode() + orjson.dumps(self.mine)
                    pipe.hset(self._key, self.process, value)
                    pipe.expire(self._key, int(STALE_SECONDS * 3))
                else:
                    pipe.hdel(self._key, self.process)
                pipe.hgetall(self._key)
                results = await pipe.execute()
            self._written = bool(self.mine)
            fields_read = results[-1]
        else:  # idle: nothing of ours to write, one read (the common case on most edges)
            fields_read = await self._redis.hgetall(self._key)
        others: dict[str, int] = {}
        dead: list[bytes | str] = []
        for name, raw in fields_read.items():
            if (name.decode() if isinstance(name, bytes) else name) == self.process:
                continue
            parsed = parse_field(raw)
            if parsed is None or now - parsed[0] > STALE_SECONDS:
                dead.append(name)
                continue
            for env, n in parsed[1].items():
                others[env] = others.get(env, 0) + n
        self.others = others
        if dead:
            # A process may rewrite its field between the read and this delete (it was
            # only late): it is then missing until its next write, one interval.
            await self._redis.hdel(self._key, *dead)
            log.info("stream counts of stopped proxy processes removed",
                     extra=fields(processes=len(dead)))  # fmt: skip

    async def run(self, interval: float) -> None:
        await every(
            interval,
            self.refresh,
            logger=log,
            unavailable="edge stream counts unavailable; deciding on the last ones read",
        )

    async def close(self, patience: float) -> None:
        """A graceful stop takes this process's streams off the edge's count at once."""
        try:
            async with asyncio.timeout(patience):
                await self._redis.hdel(self._key, self.process)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("stream counts not removed at shutdown; they expire",
                     extra=fields(error=str(exc)))  # fmt: skip


EDGE_STREAMS = web.AppKey("edge_streams", EdgeStreams)
# The same counting per key (by hash), for CRIVLINE_MAX_STREAMS_PER_KEY across the edge's
# processes: only held/open_on_edge/refresh are used (the plan's refusal is not).
KEY_STREAMS = web.AppKey("key_streams", EdgeStreams)
