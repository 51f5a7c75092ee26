"""The monitor that feeds readiness: syncd's heartbeat and the sync state, once a tick.

The monitor polls Redis once per ``health_interval``: the heartbeat key and the sync
state. Two failures in a row make the subscriber reconnect (a hung connection looks
like silence, not like an error); a new sync epoch (Redis was rebuilt) does too, so
the process resynchronises everything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from proxy import appkeys

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def monitor(app: web.Application) -> None:
    redis = app[appkeys.REDIS]
    ks = app[appkeys.KEYSPACE]
    status = app[appkeys.STATUS]
    subscriber = app[appkeys.SUBSCRIBER]
    interval = app[appkeys.OPTIONS].health_interval
    failures = 0
    while True:
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.exists(ks.heartbeat)
                pipe.hgetall(ks.sync_state)
                alive, raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            failures += 1
            status.redis_lost(f"{type(exc).__name__}: {exc}")
            if failures == 2:
                subscriber.kick(f"health check failed: {exc}")
        else:
            failures = 0
            fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
            epoch = fields.get("epoch") or None
            previous = status.epoch
            reconciled = fields.get("reconciled_at")
            if subscriber.connected.is_set() and not status.redis_up:
                status.redis_back()
            status.observed(
                syncd_alive=bool(alive),
                epoch=epoch,
                reconciled_at=float(reconciled) if reconciled else None,
            )
            if previous is not None and epoch is not None and epoch != previous:
                log.info("sync epoch changed: redis was rebuilt; resynchronising")
                subscriber.kick("sync epoch changed")
        await asyncio.sleep(interval)
