"""The central Postgres as syncd reads it: scope versions from the primary, snapshots from
the replica when there is one.

A read replica may lag. A snapshot older than the version we were told about is never
written as current: we retry the replica for up to ``replica_wait`` seconds, then read
the primary, so a stuck replica costs latency, never correctness.

Bus-only edges (``standby=True``) have no primary: the pool named ``primary`` is a
streaming standby, and it is the only source. A wake-up naming a version the standby has
not replayed yet waits for the replay (a cheap version poll, backing off) for up to
``standby_wait`` seconds; only then is the snapshot read. If the version never shows up
(the environment was deleted meanwhile, or the standby is stuck), :class:`StandbyBehind`
is raised and the wake-up is left to reconciliation, whose versions come from the same
standby and so never name a version it lacks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

import asyncpg

from crivline.ioerrors import POSTGRES_ERRORS
from crivline.logs import describe, fields
from crivline.snapshot import EnvironmentSnapshot, load_snapshot
from syncd.backoff import Backoff
from syncd.metrics import SyncdMetrics
from syncd.scope import Scope, ScopedEnvironment, environments_in_scope

log = logging.getLogger(__name__)

_VERSION = "SELECT version FROM environments WHERE id = $1"


class StandbyBehind(Exception):
    """The standby has not replayed the version a wake-up named, within ``standby_wait``."""


@dataclass(frozen=True, slots=True)
class Loaded:
    snapshot: EnvironmentSnapshot
    updated_at: float  # epoch seconds of the bump that produced this version
    from_replica: bool


class Source:
    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None,
        scope: Scope,
        metrics: SyncdMetrics,
        *,
        replica_wait: float = 2.0,
        timeout: float = 10.0,
        standby: bool = False,
        standby_wait: float = 30.0,
    ) -> None:
        if standby and replica is not None:
            raise ValueError("a bus-only source reads its standby only: no replica besides")
        self.primary = primary
        self.replica = replica
        self.standby = standby
        self.standby_wait = standby_wait
        self.scope = scope
        self.metrics = metrics
        self.replica_wait = replica_wait
        self.timeout = timeout

    async def in_scope(self, only: list[str] | None = None) -> dict[str, ScopedEnvironment]:
        """Environments in scope with their versions, from the primary (the clock's home),
        or in bus-only mode from the standby (consistent with the snapshots read there)."""
        async with asyncio.timeout(self.timeout):
            return await environments_in_scope(self.primary, self.scope, only)

    async def snapshot(self, environment_id: str, at_least: int = 0) -> Loaded | None:
        """The environment's current state, at version ``at_least`` or newer.

        None when the environment does not exist (on the primary).
        """
        if self.standby:
            await self._replayed(environment_id, at_least)
            return await self._load(self.primary, environment_id, from_replica=True)
        if self.replica is not None:
            loaded = await self._from_replica(environment_id, at_least)
            if loaded is not None:
                return loaded
        return await self._load(self.primary, environment_id, from_replica=False)

    async def _from_replica(self, environment_id: str, at_least: int) -> Loaded | None:
        assert self.replica is not None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.replica_wait
        delays = Backoff(base=0.02, cap=0.5)
        while True:
            try:
                loaded = await self._load(self.replica, environment_id, from_replica=True)
            except POSTGRES_ERRORS as exc:
                # A replica that is down is not a reason to stop: the primary answers.
                log.warning(
                    "replica read failed, reading the primary",
                    extra=fields(environment=environment_id, error=describe(exc)),
                )
                self.metrics.replica_fallbacks.inc()
                return None
            if loaded is not None and loaded.snapshot.version >= at_least:
                return loaded
            self.metrics.replica_lag_retries.inc()
            delay = delays.next()
            if loop.time() + delay > give_up:
                seen = loaded.snapshot.version if loaded is not None else None
                log.warning(
                    "replica lags the notified version, reading the primary",
                    extra=fields(environment=environment_id, wanted=at_least, replica=seen),
                )
                self.metrics.replica_fallbacks.inc()
                return None
            await asyncio.sleep(delay)

    async def _replayed(self, environment_id: str, at_least: int) -> None:
        """Return once the standby shows ``at_least`` (or newer) for the environment."""
        if at_least <= 0:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.standby_wait
        delays = Backoff(base=0.01, cap=0.25)
        while True:
            async with asyncio.timeout(self.timeout):
                seen = await self.primary.fetchval(_VERSION, environment_id)
            if seen is not None and seen >= at_least:
                return
            self.metrics.replica_lag_retries.inc()
            delay = delays.next()
            if loop.time() + delay > give_up:
                raise StandbyBehind(
                    f"the standby shows version {seen} of {environment_id}, not {at_least},"
                    f" after {self.standby_wait:g} s"
                )
            await asyncio.sleep(delay)

    async def _load(
        self, pool: asyncpg.Pool, environment_id: str, *, from_replica: bool
    ) -> Loaded | None:
        # load_snapshot is one statement: one snapshot of the database, bump time included.
        async with asyncio.timeout(self.timeout), pool.acquire() as conn:
            snapshot = await load_snapshot(cast(asyncpg.Connection, conn), environment_id)
        if snapshot is None:
            return None
        self.metrics.snapshot_reads.labels("replica" if from_replica else "primary").inc()
        return Loaded(snapshot, snapshot.updated_at, from_replica)
