"""The rebuild queue: wake-ups merged per environment, worked off by a few workers.

Each environment is pending at most once (a burst of wake-ups for it merges into one
``Want`` with the highest version) and in flight at most once; a wake-up that arrives
while its environment is being rebuilt runs once more afterwards, and only if the
version it names is still not in Redis. So a hundred commits to one environment within a
rebuild's time cost a handful of rebuilds, and a notification and a bus message for the
same version cost one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from crivline.ioerrors import is_io_error
from crivline.logs import describe, fields
from crivline.tasks import cancel_and_wait
from syncd.backoff import Backoff, reraise_if_cancelled
from syncd.metrics import SyncdMetrics
from syncd.replicate import Outcome, Replicator, Want
from syncd.scope import ScopeView

T = TypeVar("T")
log = logging.getLogger(__name__)


async def finish_in_flight(work: Coroutine[Any, Any, T], grace: float) -> T:
    """Run ``work``; if we are cancelled meanwhile, let it finish (up to ``grace``
    seconds) before the cancellation goes on — a write in flight is completed, not cut."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait({task}, timeout=grace)
        finally:
            await cancel_and_wait(task)  # we are stopping: its outcome no longer matters
        raise


class WorkQueue:
    def __init__(self, known: Mapping[str, int], metrics: SyncdMetrics) -> None:
        self.known = known
        self.metrics = metrics
        self._pending: dict[str, Want] = {}
        self._in_flight: dict[str, int] = {}  # env -> the version its rebuild aims at
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        metrics.bind_queue_depth(lambda: len(self._pending))

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, env: str, want: Want) -> str:
        """Ask for ``env`` to be synced; returns what became of it (for metrics)."""
        if want.version and want.version <= max(
            self.known.get(env, 0), self._in_flight.get(env, 0)
        ):
            return "duplicate"
        pending = self._pending.get(env)
        if pending is not None:
            if want.version and want.version <= pending.version:
                return "duplicate"
            self._pending[env] = pending.merge(want)
            return "merged"
        self._pending[env] = want
        if env not in self._in_flight:
            self._ready.put_nowait(env)
        return "queued"

    async def take(self) -> tuple[str, Want]:
        while True:
            env = await self._ready.get()
            want = self._pending.pop(env, None)
            if want is None:
                continue
            if want.version and want.version <= self.known.get(env, 0):
                continue  # applied meanwhile, by a rebuild that read a newer snapshot
            self._in_flight[env] = want.version
            return env, want

    def retry(self, env: str, want: Want) -> None:
        """Put back a want whose rebuild failed (merged with anything newer)."""
        pending = self._pending.get(env)
        self._pending[env] = want if pending is None else pending.merge(want)

    def done(self, env: str) -> None:
        self._in_flight.pop(env, None)
        if env in self._pending:
            self._ready.put_nowait(env)


async def worker(
    queue: WorkQueue,
    replicator: Replicator,
    view: ScopeView,
    metrics: SyncdMetrics,
    *,
    grace: float,
) -> None:
    """Rebuild environments from ``queue`` forever; failures are retried with backoff."""
    backoff = Backoff(base=0.05, cap=5.0)
    while True:
        env, want = await queue.take()
        try:
            outcome = await finish_in_flight(replicator.sync(env, want), grace)
        except Exception as exc:
            queue.retry(env, want)
            reraise_if_cancelled()
            metrics.errors.labels("rebuild").inc()
            delay = backoff.next()
            log.warning(
                "rebuild failed, will retry",
                extra=fields(
                    environment=env,
                    name=replicator.names.get(env),
                    version=want.version,
                    error=describe(exc),
                    retry_in=round(delay, 3),
                ),
                exc_info=not is_io_error(exc),
            )
            try:
                await asyncio.sleep(delay)
            finally:
                queue.done(env)
            continue
        backoff.reset()
        if outcome is Outcome.OUT_OF_SCOPE:
            view.outside.add(env)
        queue.done(env)
