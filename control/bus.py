"""The optional Redis pub/sub bus between control and the edges.

After a write commits, control publishes on ``{prefix}bus`` the same payload that
``crivline_bump_environment`` sent with ``pg_notify``, one message per bumped
environment. It is a second, faster wake-up for syncd, never the source of truth
(syncd reconciles by version), so publishing is fire-and-forget: a failure is logged
and counted and never fails or delays the write that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from control.metrics import Metrics
from control.store.scope import Change
from crivline import redisconn
from crivline.logs import describe, fields
from crivline.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Bus:
    def __init__(self, client: aioredis.Redis | None, channel: str, metrics: Metrics) -> None:
        self.client = client
        self.channel = channel
        self.metrics = metrics
        # A cluster bus: SPUBLISH, so a message goes to one shard, not every node.
        self.sharded = client is not None and redisconn.is_cluster(client)
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def publish(self, changes: Sequence[Change]) -> None:
        """Send ``changes`` in the background; returns at once."""
        if self.client is None or not changes:
            return
        task = asyncio.create_task(self._send(self.client, list(changes)))
        self._pending.add(task)  # keep a reference until done, or the task may vanish
        task.add_done_callback(self._pending.discard)

    async def _send(self, client: aioredis.Redis, changes: list[Change]) -> None:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for change in changes:
                    if self.sharded:
                        pipe.spublish(self.channel, change.payload())
                    else:
                        pipe.publish(self.channel, change.payload())
                await pipe.execute()
        except Exception as exc:  # a bus failure must never surface anywhere else
            self.metrics.bus_messages.labels("failed").inc(len(changes))
            log.warning(
                "bus publish failed",
                extra=fields(
                    channel=self.channel,
                    environments=[c.environment_id for c in changes],
                    error=describe(exc),
                ),
            )
        else:
            self.metrics.bus_messages.labels("published").inc(len(changes))

    async def drain(self, wait: float) -> None:
        """Wait (bounded) for messages still in flight, e.g. at shutdown."""
        pending = set(self._pending)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=wait)
        await cancel_and_wait(*late)
