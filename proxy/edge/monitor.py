"""The monitor that feeds readiness: syncd's heartbeat and the sync state, once a tick.

The monitor polls Redis once per ``health_interval``: the heartbeat key and the sync
state. Two failures in a row make the subscriber reconnect (a hung connection looks
like silence, not like an error); a new sync epoch (Redis was rebuilt) makes it
resynchronise everything at once, keeping its subscription.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from crivline.edge_store import EdgeStore
from crivline.ioerrors import REDIS_ERRORS
from crivline.logs import describe
from proxy import appkeys

log = logging.getLogger(__name__)


async def monitor(app: web.Application) -> None:
    store = EdgeStore(app[appkeys.REDIS], app[appkeys.KEYSPACE])
    status = app[appkeys.STATUS]
    subscriber = app[appkeys.SUBSCRIBER]
    interval = app[appkeys.OPTIONS].health_interval
    failures = 0
    while True:
        try:
            alive, sync = await store.liveness()
        except REDIS_ERRORS as exc:
            failures += 1
            status.redis_lost(describe(exc))
            if failures == 2:
                subscriber.kick(f"health check failed: {exc}")
        else:
            failures = 0
            epoch = sync.epoch
            previous, first = status.epoch, status.checked_at is None
            if subscriber.connected.is_set() and not status.redis_up:
                status.redis_back()
            status.observed(syncd_alive=alive, epoch=epoch, reconciled_at=sync.reconciled_at)
            if not first and epoch is not None and epoch != previous:
                log.info("sync epoch changed: redis was rebuilt; resynchronising")
                subscriber.resync_soon()
        await asyncio.sleep(interval)
