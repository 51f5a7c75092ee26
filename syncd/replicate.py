"""One environment from Postgres to Redis: read the snapshot, diff, apply under the guard.

:meth:`Replicator.sync` is the only way syncd writes an environment. Calls for one
environment are serialised (a per-environment lock), calls for different environments
run side by side. ``known`` caches the version each environment has in Redis, as far as
this process last saw; it lets wake-ups that are already applied be dropped without a
round trip, and is cleared when Redis is found to have lost its data.

The delta of a write is computed against the flag set Redis holds. Rather than read it
back on every change, the replicator remembers the flag set it last wrote for an
environment (a bounded memory) and offers it as the base with ``strict_base``: the
write script then checks, atomically, that Redis still holds exactly that version, and
when it does not (another writer, a Redis that lost data) the base is read from Redis
and the write tried again. The delta is always exactly the one against what Redis holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from enum import StrEnum

from crivline.edge_store import EdgeStore, PlanWrite
from crivline.jsontypes import JSON
from crivline.logs import fields
from crivline.snapshot import EnvironmentSnapshot
from crivline.tracing import DISABLED, Span, Tracing, traceparent_of
from syncd.metrics import SyncdMetrics
from syncd.scope import Scope
from syncd.source import Source, StandbyBehind

log = logging.getLogger(__name__)

_MAX_TRACED = 16  # trace contexts of merged wake-ups kept for the apply's span links


class Outcome(StrEnum):
    APPLIED = "applied"  # a newer version is now in Redis
    CURRENT = "current"  # Redis already had this version or a newer one
    REMOVED = "removed"  # the environment no longer exists: gone from Redis too
    OUT_OF_SCOPE = "out_of_scope"  # it exists but this edge does not serve it
    BEHIND = "behind"  # the standby never showed the version: left to reconciliation


@dataclass(frozen=True, slots=True)
class Want:
    """A reason to sync an environment, merged across wake-ups.

    ``version``: the version Redis must reach (0: whatever is current). ``at``: commit
    time of that version, when the wake-up told us. ``received``: monotonic time the
    oldest wake-up not yet applied arrived (for the notification-lag histogram; None for
    reconciliation, which is not a notification). ``traceparent``: the trace context of
    the write that made ``version``, when it was traced; ``traced``: those of the other
    wake-ups merged into this one (the apply's span links them).
    """

    version: int = 0
    at: float | None = None
    received: float | None = None
    source: str = "reconcile"
    traceparent: str | None = None
    traced: tuple[str, ...] = ()

    def merge(self, other: Want) -> Want:
        newer = other if other.version > self.version else self
        received = [r for r in (self.received, other.received) if r is not None]
        traced = tuple(
            dict.fromkeys(
                t
                for t in (*self.traced, self.traceparent, *other.traced, other.traceparent)
                if t is not None and t != newer.traceparent
            )
        )[-_MAX_TRACED:]
        return replace(newer, received=min(received) if received else None, traced=traced)


def _same_keys(old: EnvironmentSnapshot, new: EnvironmentSnapshot) -> bool:
    """Whether the key records of ``new`` are exactly those written for ``old``."""
    return (
        old.keys == new.keys and old.project_id == new.project_id and old.tenant_id == new.tenant_id
    )


class _KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class _Written:
    """The snapshot this process last wrote per environment: the newest ``limit``
    environments written (least recently written forgotten first)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: OrderedDict[str, EnvironmentSnapshot] = OrderedDict()

    def get(self, env: str) -> EnvironmentSnapshot | None:
        return self._held.get(env)

    def put(self, snapshot: EnvironmentSnapshot) -> None:
        env = snapshot.environment_id
        self._held[env] = snapshot
        self._held.move_to_end(env)
        while len(self._held) > self.limit:
            self._held.popitem(last=False)

    def forget(self, env: str | None = None) -> None:
        if env is None:
            self._held.clear()
        else:
            self._held.pop(env, None)


class Replicator:
    def __init__(
        self,
        source: Source,
        store: EdgeStore,
        scope: Scope,
        metrics: SyncdMetrics,
        *,
        tracing: Tracing = DISABLED,
        remembered: int = 128,
    ) -> None:
        self.source = source
        self.tracing = tracing
        self.store = store
        self.scope = scope
        self.metrics = metrics
        self.known: dict[str, int] = {}
        # tenant/project/environment by id, for log lines an operator can read
        self.names: dict[str, str] = {}
        # Called when a write finds an environment gone that Redis held before.
        self.on_loss: Callable[[], None] | None = None
        # Called with the tenant before an environment is applied: its plan, which the
        # write puts into Redis first.
        self.plans: Callable[[str], Awaitable[PlanWrite | None]] | None = None
        # Snapshots as last written: the base of the next delta (memory: ~the flag sets'
        # size, for the ``remembered`` environments written last).
        self.written = _Written(remembered)
        self._locks = _KeyedLocks()

    def forget(self) -> None:
        """Redis lost data: nothing this process remembers of it holds any more."""
        self.known.clear()
        self.written.forget()

    async def sync(self, environment_id: str, want: Want) -> Outcome:
        async with self._locks.hold(environment_id):
            if not self.tracing.enabled:
                return await self._sync(environment_id, want, None)
            # A child of the write's span; its own context goes into Redis with the
            # version, for the proxies' spans.
            with self.tracing.span(
                "syncd apply",
                parent=want.traceparent or (want.traced[-1] if want.traced else None),
                links=want.traced,
                attributes={
                    "crivline.environment": environment_id,
                    "crivline.wanted_version": want.version,
                    "crivline.source": want.source,
                    "crivline.edge": self.store.keyspace.edge_id,
                },
            ) as span:
                outcome = await self._sync(environment_id, want, span)
                if span is not None:
                    span.set_attribute("crivline.outcome", outcome.value)
                return outcome

    async def remove(self, environment_id: str, reason: str) -> bool:
        async with self._locks.hold(environment_id):
            return await self._remove(environment_id, reason)

    async def _remove(self, env: str, reason: str) -> bool:
        removed = await self.store.remove(env)
        self.known.pop(env, None)
        self.written.forget(env)
        if removed:
            self.metrics.removed.inc()
            log.info(
                "environment removed",
                extra=fields(environment=env, name=self.names.pop(env, None), reason=reason),
            )
        return removed

    async def _sync(self, env: str, want: Want, span: Span | None) -> Outcome:
        current: int | None = None  # the version Redis holds, when looked at
        held = self.written.get(env)
        if held is not None and self.known.get(env) == held.version < want.version:
            # Redis holds our last write, as far as this process knows: no look first.
            # The write checks it (a wake-up another syncd applied meanwhile costs a
            # snapshot read, then the write refuses it).
            pass
        elif want.version:
            current = await self.store.version(env)
            self.known[env] = current
            if current >= want.version:
                return Outcome.CURRENT
        started = time.perf_counter()
        try:
            outcome = await self._rebuild(env, want, span, current)
        except BaseException:
            self.metrics.rebuilds.labels("error").inc()
            raise
        self.metrics.rebuilds.labels(outcome.value).inc()
        if outcome is Outcome.APPLIED:
            self.metrics.rebuild_seconds.observe(time.perf_counter() - started)
        return outcome

    async def _rebuild(
        self, env: str, want: Want, span: Span | None, current: int | None
    ) -> Outcome:
        read_started = time.perf_counter()
        try:
            loaded = await self.source.snapshot(env, at_least=want.version)
        except StandbyBehind as exc:
            log.warning(
                "standby behind the wake-up, leaving it to reconciliation",
                extra=fields(environment=env, version=want.version, why=str(exc)),
            )
            return Outcome.BEHIND
        self.metrics.stages.labels("snapshot_read").observe(time.perf_counter() - read_started)
        if loaded is None:
            await self._remove(env, "deleted")
            return Outcome.REMOVED
        snapshot = loaded.snapshot
        if not self.scope.matches(
            snapshot.tenant_key, snapshot.project_key, snapshot.environment_key
        ):
            await self._remove(env, "out of scope")
            return Outcome.OUT_OF_SCOPE
        # The base of the delta: the flag set this process last wrote, unless Redis was
        # seen holding another version; the write checks that Redis still holds it.
        held = self.written.get(env)
        base_flag_set: dict[str, JSON] | None
        if held is not None and current in (None, held.version):
            base, base_flag_set = held.version, held.flag_set
        else:
            held = None
            base, base_flag_set = await self.store.read_current(env)
        if base >= snapshot.version:
            self.known[env] = base
            return Outcome.CURRENT
        exact = want.at is not None and want.version == snapshot.version
        committed_at = want.at if exact and want.at is not None else loaded.updated_at
        plan = await self.plans(snapshot.tenant_id) if self.plans is not None else None
        write_started = time.perf_counter()
        while True:
            result = await self.store.apply(
                snapshot,
                base_version=base,
                base_flag_set=base_flag_set,
                committed_at=committed_at,
                traceparent=traceparent_of(span),
                strict_base=True,
                plan=plan,
                # Redis holding our last write holds its key records: rewrite them only
                # when the keys changed.
                key_records=held is None or not _same_keys(held, snapshot),
            )
            if not result.base_moved:
                break
            # Redis holds another version than the base offered: read it, and retry.
            held = None
            self.written.forget(env)
            base, base_flag_set = await self.store.read_current(env)
        self.metrics.stages.labels("redis_write").observe(time.perf_counter() - write_started)
        if not result.applied:  # another writer got there first
            self.written.forget(env)
            self.known[env] = max(result.previous, self.known.get(env, 0))
            return Outcome.CURRENT
        if base == 0 and self.known.get(env, 0) > 0:
            self.written.forget()  # Redis had this environment and lost it
            if self.on_loss is not None:
                self.on_loss()  # check everything now
        self.known[env] = snapshot.version
        self.written.put(snapshot)
        self.metrics.versions_applied.inc()
        if span is not None:
            span.set_attributes({"crivline.version": snapshot.version, "crivline.base": base})
        now = time.time()
        if want.source != "full_sync":  # a full sync copies old data: that is no lag
            self.metrics.commit_lag.observe(max(0.0, now - committed_at))
        if want.received is not None:
            waited = max(0.0, time.monotonic() - want.received)
            self.metrics.notification_lag.observe(waited)
            self.metrics.stages.labels("wakeup_to_written").observe(waited)
            if exact and want.source != "full_sync":
                woken = now - waited  # the wall-clock time of the notification
                to_wakeup = max(0.0, woken - committed_at)
                self.metrics.stages.labels("commit_to_wakeup").observe(to_wakeup)
        name = f"{snapshot.tenant_key}/{snapshot.project_key}/{snapshot.environment_key}"
        self.names[env] = name
        log.info(
            "environment applied",
            extra=fields(
                environment=env,
                name=name,
                version=snapshot.version,
                previous=result.previous,
                keys_changed=result.keys_changed,
                flags=len(snapshot.flag_set.get("flags") or {}),
                source=want.source,
                replica=loaded.from_replica,
                since_commit=round(max(0.0, now - committed_at), 4),
            ),
        )
        return Outcome.APPLIED
