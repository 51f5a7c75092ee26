"""Each proxy process tells its edge what it serves: ``{p}edge:{edge}:proxies``.

Every ``presence_seconds`` the process writes its own field (``{host}:{pid}``) — the
version it holds of each environment, its readiness verdict, when it wrote — with one
pipelined HSET + EXPIRE, from the state in memory (never on a request's path). A graceful
stop deletes the field; a process that died leaves one whose ``at`` stops moving, which
readers show as stale, and the whole hash expires when no process writes any more.
``crivline status`` reads it to show, per environment, each process's version beside
Postgres's and Redis's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.logs import fields
from crivline.tasks import every

log = logging.getLogger(__name__)


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Presence:
    def __init__(
        self,
        redis: Redis,
        key: str,
        versions: Callable[[], Iterable[tuple[str, int]]],
        verdict: Callable[[], str],
        *,
        interval: float,
    ) -> None:
        self._redis = redis
        self._key = key
        self._versions = versions
        self._verdict = verdict
        self._interval = interval
        self.name = process_name()
        self._started = time.time()

    def document(self, now: float | None = None) -> dict[str, Any]:
        return {
            "at": round(time.time() if now is None else now, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "startedAt": round(self._started, 3),
            "status": self._verdict(),
            "versions": dict(self._versions()),
        }

    async def publish(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, self.name, orjson.dumps(self.document()))
            pipe.expire(self._key, max(30, int(self._interval * 10)))
            await pipe.execute()

    async def run(self) -> None:
        await every(
            self._interval,
            self.publish,
            logger=log,
            unavailable="proxy presence not published; Redis is unavailable",
        )

    async def close(self, patience: float) -> None:
        try:
            async with asyncio.timeout(patience):
                await self._redis.hdel(self._key, self.name)
        except (RedisError, OSError, TimeoutError) as exc:
            log.info("presence not removed at shutdown; it goes stale",
                     extra=fields(error=str(exc)))  # fmt: skip
