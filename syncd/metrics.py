"""syncd's Prometheus metrics, in a registry of their own (one per daemon)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from crivline.runtime_metrics import add_runtime_collectors

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_REBUILD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SyncdMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            add_runtime_collectors(registry)
        self.registry = registry
        r = self.registry
        self.environments = Gauge(
            "crivline_syncd_environments",
            "Environments in this edge's scope at the last reconciliation.",
            registry=r,
        )
        self.environments_behind = Gauge(
            "crivline_syncd_environments_behind",
            "Environments whose Redis version was behind Postgres at the last reconciliation.",
            registry=r,
        )
        self.versions_applied = Counter(
            "crivline_syncd_versions_applied_total",
            "Environment versions written to the edge Redis.",
            registry=r,
        )
        self.rebuilds = Counter(
            "crivline_syncd_rebuilds_total",
            "Environment snapshots read from Postgres, by outcome.",
            ["outcome"],  # applied | current | removed | out_of_scope | behind | error
            registry=r,
        )
        self.rebuild_seconds = Histogram(
            "crivline_syncd_rebuild_duration_seconds",
            "Time to read an environment from Postgres and write it to Redis.",
            buckets=_REBUILD_BUCKETS,
            registry=r,
        )
        self.notification_lag = Histogram(
            "crivline_syncd_notification_lag_seconds",
            "From receiving a change notification (Postgres or bus) to the change applied.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.commit_lag = Histogram(
            "crivline_syncd_commit_lag_seconds",
            "From the change's commit in Postgres to its write in Redis (wall clocks).",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "crivline_syncd_stage_seconds",
            "Where a change's time goes in syncd, by stage: commit_to_wakeup (its commit in "
            "Postgres to its notification here, wall clocks), wakeup_to_written (to its "
            "write in Redis), snapshot_read (the Postgres read), redis_write (the write).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.wakeups = Counter(
            "crivline_syncd_wakeups_total",
            "Change notifications received, by source and fate.",
            ["source", "fate"],  # fate: queued | merged | duplicate | ignored | invalid
            registry=r,
        )
        self.reconnects = Counter(
            "crivline_syncd_reconnects_total",
            "Connections re-established after a loss.",
            ["target"],  # postgres_listen | bus | redis
            registry=r,
        )
        self.reconciliations = Counter(
            "crivline_syncd_reconciliations_total",
            "Reconciliation passes, by result.",
            ["result"],  # ok | error
            registry=r,
        )
        self.reconcile_resyncs = Counter(
            "crivline_syncd_reconcile_resyncs_total",
            "Environments reconciliation found behind Postgres (a notification was lost"
            " or not yet handled).",
            registry=r,
        )
        self.full_syncs = Counter(
            "crivline_syncd_full_syncs_total",
            "Completed full syncs, by reason.",
            ["reason"],  # startup | redis_lost_data
            registry=r,
        )
        self.redis_data_lost = Counter(
            "crivline_syncd_redis_data_lost_total",
            "Times the edge Redis was found without our epoch (flushed, restarted, evicted).",
            registry=r,
        )
        self.removed = Counter(
            "crivline_syncd_environments_removed_total",
            "Environments removed from the edge (deleted or out of scope).",
            registry=r,
        )
        self.version_ahead = Counter(
            "crivline_syncd_version_ahead_total",
            "Environments whose Redis version is ahead of Postgres (a restored database?).",
            registry=r,
        )
        self.snapshot_reads = Counter(
            "crivline_syncd_snapshot_reads_total",
            "Environment snapshots read, by where from.",
            ["source"],  # primary | replica (a bus-only edge's standby counts as replica)
            registry=r,
        )
        self.replica_lag_retries = Counter(
            "crivline_syncd_replica_lag_retries_total",
            "Snapshot reads retried because the replica (or standby) lagged the wanted version.",
            registry=r,
        )
        self.replica_fallbacks = Counter(
            "crivline_syncd_replica_fallbacks_total",
            "Snapshot reads sent to the primary because the replica lagged or failed.",
            registry=r,
        )
        self.errors = Counter(
            "crivline_syncd_errors_total",
            "Failed operations (retried), by what failed.",
            ["operation"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "crivline_syncd_queue_depth",
            "Environments waiting for a rebuild.",
            registry=r,
        )
        self.ready = Gauge(
            "crivline_syncd_ready",
            "1 when a full sync completed and the last reconciliation is recent.",
            registry=r,
        )
        self._last_reconciliation: float | None = None
        self.last_reconciliation_age = Gauge(
            "crivline_syncd_last_reconciliation_age_seconds",
            "Seconds since the last successful reconciliation (+Inf: none yet).",
            registry=r,
        )
        self.last_reconciliation_age.set_function(self._reconciliation_age)

    def reconciled(self, at: float | None = None) -> None:
        self._last_reconciliation = time.monotonic() if at is None else at

    def _reconciliation_age(self) -> float:
        if self._last_reconciliation is None:
            return float("inf")
        return time.monotonic() - self._last_reconciliation

    def reconciliation_age(self) -> float:
        return self._reconciliation_age()

    def bind_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))
