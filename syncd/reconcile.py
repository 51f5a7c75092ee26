"""Reconciliation: compare every in-scope ``environments.version`` with Redis, and heal.

This is what makes a lost notification cost seconds, never a change:

- an environment behind Postgres is queued for a rebuild;
- one in Redis but no longer in scope (deleted, moved, filtered out) is removed, after
  a second look at Postgres so an environment created a moment ago is not;
- a Redis without our epoch (flushed, restarted empty, evicted) gets a full sync, which
  rewrites — and so re-announces — every environment, and writes a new epoch only if
  Redis lost nothing while it ran.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from crivline.edge_store import EdgeStore
from crivline.logs import describe, fields
from syncd.metrics import SyncdMetrics
from syncd.replicate import Outcome, Replicator, Want
from syncd.scope import ScopedEnvironment, ScopeView, scope_owners
from syncd.source import Source
from syncd.work import WorkQueue, finish_in_flight

log = logging.getLogger(__name__)


class RedisLostData(Exception):
    """The edge Redis lost our data while we were working: start over with a full sync."""


class SyncIncomplete(Exception):
    """Some environments could not be synced; the full sync is retried."""


class Reconciler:
    def __init__(
        self,
        source: Source,
        store: EdgeStore,
        replicator: Replicator,
        queue: WorkQueue,
        view: ScopeView,
        metrics: SyncdMetrics,
        *,
        concurrency: int = 4,
        grace: float = 10.0,
    ) -> None:
        self.source = source
        self.store = store
        self.replicator = replicator
        self.queue = queue
        self.view = view
        self.metrics = metrics
        self.concurrency = concurrency
        self.grace = grace
        self.epoch: str | None = None
        self.synced = False  # a full sync completed and Redis still holds its epoch
        self._warned_ahead: set[tuple[str, int]] = set()
        self._marker: str | None = None  # the sync state's marker of our full sync

    async def run_once(self) -> None:
        """One pass: a full sync when one is due, a reconciliation otherwise."""
        if not self.synced:
            await self.full_sync("startup" if self.epoch is None else "redis_lost_data")
        else:
            await self.reconcile()

    async def full_sync(self, reason: str) -> None:
        started = time.perf_counter()
        if self._marker is None:  # one marker across retries of a failing full sync
            self._marker = await self.store.begin_full_sync()
        marker = self._marker
        scope = await self._scope()
        behind = await self._behind(scope)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def sync(env: str, target: ScopedEnvironment) -> Outcome:
            async with semaphore:
                want = Want(target.version, target.updated_at, None, "full_sync")
                return await finish_in_flight(self.replicator.sync(env, want), self.grace)

        results = await asyncio.gather(
            *(sync(env, target) for env, target in behind.items()), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, Exception):  # cancellation and the like: never swallowed
                raise failure
        if failures:
            raise SyncIncomplete(
                f"{len(failures)} of {len(behind)} environments failed; first: "
                + describe(failures[0])
            )
        await self._remove_strays(scope)
        epoch = await self.store.finish_full_sync(marker)
        self._marker = None
        if epoch is None:
            self.metrics.redis_data_lost.inc()
            self.replicator.forget()
            raise RedisLostData("the edge Redis lost data during the full sync")
        if self.epoch is not None and epoch != self.epoch:
            log.info("new epoch", extra=fields(epoch=epoch, previous=self.epoch))
        self.epoch = epoch
        self.synced = True
        self.metrics.full_syncs.labels(reason).inc()
        self.metrics.environments_behind.set(0)
        self.metrics.reconciled()
        log.info(
            "full sync complete",
            extra=fields(
                reason=reason,
                environments=len(scope),
                written=sum(1 for r in results if r is Outcome.APPLIED),
                seconds=round(time.perf_counter() - started, 3),
            ),
        )

    async def reconcile(self) -> None:
        started = await self.store.clock()  # before Postgres is read: see touch_reconciled
        state = await self.store.sync_state()
        if state.epoch is None:
            self._lost("the sync state has no epoch")
            await self.full_sync("redis_lost_data")
            return
        if state.epoch != self.epoch:
            # Another syncd at this edge rebuilt Redis after a loss; its epoch is as good.
            log.info("adopting epoch", extra=fields(epoch=state.epoch, previous=self.epoch))
            self.epoch = state.epoch
        scope = await self._scope()
        behind = await self._behind(scope)
        self.metrics.environments_behind.set(len(behind))
        for env, target in behind.items():
            self.metrics.reconcile_resyncs.inc()
            self.queue.offer(env, Want(target.version, target.updated_at, None, "reconcile"))
        if behind:
            log.info("reconciliation found changes", extra=fields(environments=len(behind)))
        await self._remove_strays(scope)
        while not await self.store.touch_reconciled(self.epoch, behind=behind, started=started):
            now = await self.store.sync_state()
            if now.epoch is None:
                self._lost("the epoch vanished during reconciliation")
                raise RedisLostData("the edge Redis lost data during reconciliation")
            # Another syncd rebuilt meanwhile; what we compared is still a valid check.
            log.info("adopting epoch", extra=fields(epoch=now.epoch, previous=self.epoch))
            self.epoch = now.epoch
        self.metrics.reconciled()

    def _lost(self, why: str) -> None:
        self.synced = False
        self.metrics.redis_data_lost.inc()
        self.replicator.forget()
        log.warning("edge redis lost our data, rebuilding everything", extra=fields(why=why))

    async def _scope(self) -> dict[str, ScopedEnvironment]:
        scope = await self.source.in_scope()
        tenants, projects = await scope_owners(self.source.primary, self.view.scope)
        self.view.refresh(frozenset(scope), tenants, projects)
        self.metrics.environments.set(len(scope))
        return scope

    async def _behind(self, scope: dict[str, ScopedEnvironment]) -> dict[str, ScopedEnvironment]:
        """Environments whose Redis version is older than Postgres's."""
        versions = await self.store.versions(list(scope))
        behind: dict[str, ScopedEnvironment] = {}
        ahead: list[str] = []
        for env, target in scope.items():
            have = versions[env]
            self.replicator.known[env] = have
            if have < target.version:
                behind[env] = target
            elif have > target.version and (env, have) not in self._warned_ahead:
                ahead.append(env)
        if ahead:
            await self._warn_ahead(ahead, versions)
        return behind

    async def _warn_ahead(self, envs: list[str], versions: dict[str, int]) -> None:
        """Redis newer than the versions read a moment *before* it is no news: a write
        (ours or another syncd's) may have landed in between. A second look at Postgres,
        read after Redis, tells: Redis can only still be ahead if Postgres went back in
        time (a restored backup?). The guard keeps the newer Redis version; an operator
        decides (FLUSHALL at the edge heals)."""
        now = await self.source.in_scope(only=sorted(envs))
        for env in envs:
            have, target = versions[env], now.get(env)
            if target is None or have <= target.version:
                continue
            self._warned_ahead.add((env, have))
            self.metrics.version_ahead.inc()
            log.error(
                "redis is ahead of postgres",
                extra=fields(environment=env, redis=have, postgres=target.version),
            )

    async def _remove_strays(self, scope: dict[str, ScopedEnvironment]) -> None:
        strays = await self.store.served() - scope.keys()
        if not strays:
            return
        # A second look: an environment created after the scope was read is no stray.
        ids = sorted(env for env in strays if _is_uuid(env))
        still = await self.source.in_scope(only=ids) if ids else {}
        for env in sorted(strays - still.keys()):
            await finish_in_flight(self.replicator.remove(env, "not in scope"), self.grace)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
