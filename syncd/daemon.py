"""The sync daemon: wires the parts together and owns their lifecycle.

``Daemon(config, primary=…, redis=…, …)`` takes its I/O clients ready-made (``main``
builds them from the settings; tests hand in their own). ``await daemon.run()`` serves
until ``request_stop()``/``close()``; then it stops following, lets the writes in flight
finish (bounded by ``shutdown_grace``), stops its HTTP server and returns. The clients
it was given are the caller's to close.

In bus-only mode (``config.bus_only``) ``primary`` is a streaming standby and the only
Postgres syncd talks to; there is no Postgres listener, and the bus is required.

Tasks: the reconciler (full sync at start, then every ``reconcile_interval`` and after
any reconnect), ``concurrency`` rebuild workers, the Postgres listener, the bus
listener (when a bus is configured), and a heartbeat that also notices Redis coming
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from crivline import httpserver
from crivline.edge_store import EdgeStore
from crivline.ioerrors import REDIS_ERRORS, is_io_error
from crivline.logs import describe, fields
from crivline.probes import health_body, readiness_body
from crivline.tasks import cancel_and_wait
from crivline.tracing import DISABLED, Tracing
from syncd.backoff import Backoff, reraise_if_cancelled
from syncd.config import SyncdConfig
from syncd.follow import BusListener, PostgresListener, Wakeup
from syncd.http import build_app
from syncd.metrics import SyncdMetrics
from syncd.plans import PlanPublisher
from syncd.reconcile import Reconciler, RedisLostData
from syncd.replicate import Replicator, Want
from syncd.resync import Resync
from syncd.scope import ScopeView
from syncd.source import Source
from syncd.usage import UsageFlusher
from syncd.work import WorkQueue, worker

log = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self,
        config: SyncdConfig,
        *,
        primary: asyncpg.Pool,
        redis: Redis,
        replica: asyncpg.Pool | None = None,
        bus: Redis | None = None,
        listen_connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        metrics: SyncdMetrics | None = None,
        tracing: Tracing = DISABLED,
    ) -> None:
        if config.bus_only and (bus is None or replica is not None):
            raise ValueError("a bus-only syncd takes a bus, and its standby as the one pool")
        self.config = config
        self.metrics = metrics or SyncdMetrics()
        self.store = EdgeStore(redis, config.keyspace)
        self.source = Source(
            primary,
            replica,
            config.scope,
            self.metrics,
            replica_wait=config.replica_wait,
            timeout=config.io_timeout,
            standby=config.bus_only,
            standby_wait=config.standby_wait,
        )
        self.view = ScopeView(config.scope)
        self.replicator = Replicator(
            self.source, self.store, config.scope, self.metrics, tracing=tracing
        )
        self.replicator.on_loss = self.trigger_reconcile
        self.replicator.plans = PlanPublisher(primary).read
        self.queue = WorkQueue(self.replicator.known, self.metrics)
        self.reconciler = Reconciler(
            self.source,
            self.store,
            self.replicator,
            self.queue,
            self.view,
            self.metrics,
            concurrency=config.concurrency,
            grace=config.shutdown_grace,
        )
        self.resync = Resync(
            self.source,
            self.store,
            self.replicator,
            concurrency=config.concurrency,
            grace=config.shutdown_grace,
        )
        # Reconnect attempts never wait much longer than a reconciliation interval.
        reconnect_cap = min(5.0, max(0.5, config.reconcile_interval))
        self.listener: PostgresListener | None = None
        if config.listen and not config.bus_only and listen_connect is not None:
            self.listener = PostgresListener(
                listen_connect,
                self._wakeup,
                self.trigger_reconcile,
                self.metrics,
                probe_interval=config.listen_probe_interval,
                timeout=config.io_timeout,
                backoff_cap=reconnect_cap,
            )
        self.bus: BusListener | None = None
        if bus is not None:
            self.bus = BusListener(
                bus,
                config.keyspace.bus,
                self._wakeup,
                self.trigger_reconcile,
                self.metrics,
                backoff_cap=reconnect_cap,
            )
        self.port: int | None = None
        self.started_at = time.time()
        self._trigger = asyncio.Event()
        self._beat = asyncio.Event()  # write the heartbeat now (readiness changed)
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until asked to stop. Raises if a part of the daemon died of a bug."""
        if self._running or self._stopped.is_set():
            raise RuntimeError("a Daemon runs once")
        self._running = True
        failure: BaseException | None = None
        try:
            await self._start_http()
            self._start_tasks()
            log.info(
                "syncd started",
                extra=fields(
                    scope=self.config.scope.describe(),
                    edge=self.config.keyspace.edge_id,
                    port=self.port,
                    listen=self.listener is not None,
                    bus=self.bus is not None,
                    bus_only=self.config.bus_only,
                ),
            )
            stop = asyncio.create_task(self._stop.wait(), name="syncd-stop")
            everything = [task for group in self._tasks.values() for task in group]
            try:
                done, _ = await asyncio.wait(
                    [stop, *everything], return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                await cancel_and_wait(stop)
            for task in done:
                if task is not stop:
                    ended = None if task.cancelled() else task.exception()
                    failure = ended or RuntimeError(f"{task.get_name()} ended")
                    log.error(
                        "a syncd task died, stopping",
                        extra=fields(task=task.get_name()),
                        exc_info=failure,
                    )
                    break
        finally:
            await self._shutdown()
        if failure is not None:
            raise RuntimeError(f"syncd stopped: {failure}") from failure

    def request_stop(self) -> None:
        """Ask ``run()`` to finish (safe from a signal handler)."""
        self._stop.set()

    async def close(self) -> None:
        """Stop and wait until ``run()`` has wound down (a no-op if it never ran)."""
        self.request_stop()
        if self._running:
            await self._stopped.wait()

    def trigger_reconcile(self) -> None:
        self._trigger.set()

    async def _start_http(self) -> None:
        app = build_app(
            self.health,
            self.readiness,
            self.metrics.registry,
            resync=self.resync.run,
            operator_token=self.config.operator_token,
        )
        runner = await httpserver.listen(
            app,
            self.config.host,
            self.config.port,
            port_variable="CRIVLINE_SYNCD_PORT",
            reuse_address=True,
        )
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.port

    def _start_tasks(self) -> None:
        def spawn(group: str, name: str, coro: Any) -> None:
            self._tasks.setdefault(group, []).append(asyncio.create_task(coro, name=name))

        if self.listener is not None:
            spawn("follow", "syncd-listen", self.listener.run())
        if self.bus is not None:
            spawn("follow", "syncd-bus", self.bus.run())
        spawn("reconcile", "syncd-reconcile", self._reconcile_loop())
        for number in range(self.config.concurrency):
            spawn(
                "work",
                f"syncd-worker-{number}",
                worker(
                    self.queue,
                    self.replicator,
                    self.view,
                    self.metrics,
                    grace=self.config.shutdown_grace,
                ),
            )
        spawn("heartbeat", "syncd-heartbeat", self._heartbeat_loop())
        if self.config.control_url and self.config.edge_credential:
            flusher = UsageFlusher(
                self.store.redis, self.config.keyspace, control_url=self.config.control_url,
                credential=self.config.edge_credential, timeout=self.config.io_timeout,
            )  # fmt: skip
            spawn("usage", "syncd-usage", flusher.run(self.config.usage_flush_interval))

    async def _shutdown(self) -> None:
        try:
            # Stop taking work first, then let the writes in flight finish (each rebuild
            # is shielded for up to shutdown_grace), then the rest.
            grace = self.config.shutdown_grace + 1
            for group, patience in (
                ("follow", 1.0),
                ("reconcile", grace),
                ("work", grace),
                ("heartbeat", 1.0),
                ("usage", 1.0),  # a batch cut off here stays staged for the next syncd
            ):
                await _cancel_all(self._tasks.get(group, []), patience)
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        finally:
            self.metrics.ready.set(0)
            self._stopped.set()
            log.info("syncd stopped")

    # -- following ---------------------------------------------------------------------

    def _wakeup(self, wakeup: Wakeup, source: str) -> None:
        if not self.view.admits(wakeup.environment, wakeup.tenant, wakeup.project):
            self.metrics.wakeups.labels(source, "ignored").inc()
            return
        fate = self.queue.offer(
            wakeup.environment,
            Want(wakeup.version, wakeup.at, wakeup.received, source, wakeup.traceparent),
        )
        self.metrics.wakeups.labels(source, fate).inc()

    # -- loops -------------------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        interval = self.config.reconcile_interval
        backoff = Backoff(base=0.1, cap=min(5.0, interval))
        while True:
            self._trigger.clear()
            was_synced = self.reconciler.synced
            try:
                await self.reconciler.run_once()
            except RedisLostData as exc:
                reraise_if_cancelled()
                self.metrics.reconciliations.labels("error").inc()
                log.warning("reconciliation restarts", extra=fields(why=str(exc)))
                delay = 0.05
            except Exception as exc:
                reraise_if_cancelled()
                self.metrics.reconciliations.labels("error").inc()
                delay = backoff.next()
                log.warning(
                    "reconciliation failed, will retry",
                    extra=fields(
                        error=describe(exc),
                        retry_in=round(delay, 3),
                        full_sync=not self.reconciler.synced,
                    ),
                    exc_info=not is_io_error(exc),
                )
            else:
                self.metrics.reconciliations.labels("ok").inc()
                backoff.reset()
                delay = interval
            self.metrics.ready.set(1 if self.readiness()["ready"] else 0)
            if self.reconciler.synced != was_synced:
                self._beat.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._trigger.wait()

    async def _heartbeat_loop(self) -> None:
        ttl = self.config.heartbeat_ttl
        healthy = True
        while True:
            try:
                await self.store.heartbeat(ttl, self._heartbeat_info())
            except REDIS_ERRORS as exc:
                reraise_if_cancelled()
                if healthy:
                    log.warning("edge redis unreachable", extra=fields(error=describe(exc)))
                healthy = False
            else:
                if not healthy:
                    self.metrics.reconnects.labels("redis").inc()
                    log.info("edge redis reachable again")
                    self.trigger_reconcile()
                healthy = True
            # While Redis is away, look more often: its return starts the healing.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ttl / 3 if healthy else min(ttl / 3, 0.5)):
                    await self._beat.wait()
            self._beat.clear()

    def _heartbeat_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": round(self.started_at, 3),
            "at": round(time.time(), 3),
            "epoch": self.reconciler.epoch,
            "ready": self.readiness()["ready"],
            "scope": self.config.scope.describe(),
        }

    # -- status ------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        tasks = [task for group in self._tasks.values() for task in group]
        dead = [task.get_name() for task in tasks if task.done()]
        reasons = [f"task {name} has ended" for name in dead]
        if not self._running or self._stop.is_set():
            reasons.append("stopping" if self._stop.is_set() else "not running")
        return health_body(reasons, deadTasks=dead)

    def readiness(self) -> dict[str, Any]:
        age = self.metrics.reconciliation_age()
        fresh = age <= self.config.stale_after
        reasons = []  # why not ready, in words an operator can act on
        if self._stop.is_set():
            reasons.append("stopping")
        if not self.reconciler.synced:
            reasons.append("the first full sync of Postgres into Redis has not completed yet")
        if not fresh:
            reasons.append(
                "no reconciliation with Postgres and Redis has succeeded "
                + (
                    "yet"
                    if age == float("inf")
                    else f"for {age:.1f} s (stale after {self.config.stale_after:g} s)"
                )
                + ": is one of them unreachable? (see the log)"
            )
        return readiness_body(
            reasons,
            fullSync=self.reconciler.synced,
            epoch=self.reconciler.epoch,
            lastReconciliationAgeSeconds=round(age, 3) if age != float("inf") else None,
            staleAfterSeconds=self.config.stale_after,
            pending=len(self.queue),
            listening=self.listener.listening if self.listener is not None else None,
            bus=self.bus.subscribed if self.bus is not None else None,
        )


async def _cancel_all(tasks: list[asyncio.Task[None]], patience: float) -> None:
    """Cancel ``tasks`` and wait for them: again every second after ``patience``."""
    await cancel_and_wait(*tasks, patience=patience, every=1.0)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("task ended", extra=fields(task=task.get_name()))
