"""Prometheus metrics of one proxy process, in its own registry (one per app).

Everything an operator needs to see the edge's health from the outside: traffic by
route and status, latency, the share of conditional requests answered 304, cache hit
rates, auth failures and rate limiting, open streams and events sent, how old the
served snapshot is and how long a change took from its commit in Postgres to being
handed to this process's stream clients. Every family is declared here, once.

Hot-path cost: the per-request families (requests, latency, conditional requests,
cache lookups, events sent) are plain dicts turned into metric families at scrape time
(:mod:`proxy.tally`), so counting a request costs a few dict operations and no lock.

Under ``crivline proxy --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the
supervisor, :mod:`proxy.sharedmetrics`) ``/metrics`` answers for all the workers: it
renders the merged files of every worker, not this process's registry. The registry
itself (``app[METRICS].registry``) stays this process's view in both modes. Each gauge
declares how the workers' values merge (``multiprocess_mode``; the live modes drop a
dead worker's value): see :data:`GAUGE_MODES`.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from crivline.runtime_metrics import add_runtime_collectors
from crivline.wire import Gate, GateCollector
from proxy.sharedmetrics import (
    SHARED_DIR,
    GaugeMode,
    Mirror,
    SharedLatencyTally,
    SharedTally,
    exposition_registry,
)
from proxy.tally import HotCollector, LatencyTally, Tally

# How each gauge merges across the workers of one supervisor (ignored by a single
# process). Open streams and connections add up; an edge is as fresh as its stalest
# worker (max of ages), as complete as its least loaded one (min of environments) and
# reaches Redis only if every worker does (min of redis_up). A worker's start time is
# the youngest's (max), so a restart shows. Gauges not named here (memory, descriptors)
# add up.
GAUGE_MODES: dict[str, GaugeMode] = {
    "crivline_proxy_streams_open": "livesum",
    "crivline_proxy_connections_open": "livesum",
    "crivline_proxy_environments_loaded": "livemin",
    "crivline_proxy_snapshot_age_seconds": "livemax",
    "crivline_proxy_stale_seconds": "livemax",
    "crivline_proxy_redis_up": "livemin",
    "process_start_time_seconds": "livemax",
    "process_max_fds": "livemin",
}

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_STATUS = {code: str(code) for code in range(100, 600)}
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self, shared_dir: str | None = SHARED_DIR) -> None:
        """``shared_dir``: the workers' multiprocess folder, None for a single process
        (it must be the folder prometheus_client itself was imported with)."""
        self.shared_dir = shared_dir
        self.registry = CollectorRegistry(auto_describe=True)
        runtime = add_runtime_collectors(self.registry)
        r = self.registry
        p = "crivline_proxy_"
        self._modes: dict[Gauge, GaugeMode] = {}
        tally = Tally if shared_dir is None else SharedTally
        latency = LatencyTally if shared_dir is None else SharedLatencyTally
        self.requests = tally(
            p + "requests", "HTTP requests answered", ("route", "method", "status")
        )
        self.latency = latency(
            p + "request_duration_seconds",
            "Time to answer a request (streams: to open them)",
            _LATENCY_BUCKETS,
        )
        self.conditional = tally(
            p + "conditional_requests",
            "Requests with If-None-Match; result=not_modified is the 304 share",
            ("route", "result"),
        )
        self.cache = tally(
            p + "cache_lookups",
            "In-process cache lookups (environment, key, negative_key, bulk)",
            ("cache", "result"),
        )
        self.events_sent = tally(
            p + "stream_events", "SSE events handed to stream clients", ("kind", "event")
        )
        r.register(
            HotCollector(
                [self.requests, self.conditional, self.cache, self.events_sent], [self.latency]
            )
        )
        self.auth_failures = Counter(
            p + "auth_failures", "Requests refused by authentication", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            p + "rate_limited", "Requests refused with 429", ["limit"], registry=r
        )
        self.streams_open = self._gauge(p + "streams_open", "Open SSE streams", ["kind"])
        self.stream_closed = Counter(
            p + "streams_closed", "SSE streams ended, by why", ["reason"], registry=r
        )
        self.propagation_lag = Histogram(
            p + "propagation_lag_seconds",
            "From a change's commit in Postgres to its events being handed to stream clients",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.ahead = Counter(
            p + "client_ahead",
            "Requests proving the client holds a newer version than this process, by outcome",
            ["outcome"],
            registry=r,
        )
        self.stages = Histogram(
            p + "stage_seconds",
            "Where a change's time goes in the proxy, by stage: redis_to_told (syncd's write "
            "in Redis to its announcement here, wall clocks), told_to_applied (reading and "
            "building the new version), build (building it), fan_out (its first to its "
            "last stream client's write), commit_to_first_write and commit_to_last_write.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.refreshes = Counter(
            p + "environment_refreshes",
            "Environment reloads from Redis, by outcome",
            ["outcome"],
            registry=r,
        )
        self.environments = self._gauge(p + "environments_loaded", "Environments held in memory")
        self.snapshot_age = self._gauge(
            p + "snapshot_age_seconds",
            "Seconds since syncd last confirmed this edge's Redis matches Postgres",
        )
        self.stale = self._gauge(
            p + "stale_seconds",
            "Seconds this process has been serving possibly stale data (0: fresh)",
        )
        self.redis_up = self._gauge(p + "redis_up", "1 while Redis is reachable")
        self._mirror: Mirror | None = None
        self._exposition = self.registry
        if shared_dir is not None:
            self._mirror = Mirror(GAUGE_MODES)
            self._mirror.add(runtime.process)
            self._mirror.add(runtime.gc)
            self._exposition = exposition_registry(shared_dir)
            # python_info is the same interpreter in every worker: the scraper's own.
            self._exposition.register(runtime.platform)
        self._tallies = [
            t
            for t in (self.requests, self.conditional, self.cache, self.events_sent, self.latency)
            if isinstance(t, (SharedTally, SharedLatencyTally))
        ]

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] | list[str] = ()) -> Gauge:
        mode = GAUGE_MODES[name]
        gauge = Gauge(name, doc, labels, registry=self.registry, multiprocess_mode=mode)
        self._modes[gauge] = mode
        return gauge

    @property
    def shared(self) -> bool:
        """Whether ``/metrics`` answers for every worker of a supervisor."""
        return self._mirror is not None

    # -- the hot path ------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc((route, method, _STATUS.get(status) or str(status)))
        self.latency.observe(route, seconds)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache.inc((cache, "hit" if hit else "miss"))

    def conditional_request(self, route: str, not_modified: bool) -> None:
        self.conditional.inc((route, "not_modified" if not_modified else "modified"))

    def events(self, kind: str, event: str, count: int) -> None:
        self.events_sent.inc((kind, event), count)

    def bind_gauges(
        self,
        *,
        environments: Callable[[], float],
        snapshot_age: Callable[[], float],
        stale: Callable[[], float],
        redis_up: Callable[[], float],
    ) -> None:
        """Gauges read at scrape time from the live objects (shared: written every
        :meth:`publish`, the files cannot call a function of another process)."""
        bound = (
            (self.environments, environments),
            (self.snapshot_age, snapshot_age),
            (self.stale, stale),
            (self.redis_up, redis_up),
        )
        for gauge, value in bound:
            if self._mirror is None:
                gauge.set_function(value)
            else:
                self._mirror.bind(gauge, self._modes[gauge], value)

    def bind_gate(self, gate: Gate) -> None:
        """The connection counts of this process's :class:`~crivline.wire.Gate`."""
        self.add_collector(GateCollector(gate, "crivline_proxy_"))

    def add_collector(self, collector: Collector) -> None:
        """A collector of counters and gauges read from live objects, in this registry
        and (shared) copied into the workers' files by :meth:`publish`."""
        self.registry.register(collector)
        if self._mirror is not None:
            self._mirror.add(collector)

    def publish(self) -> None:
        """Shared: add what only this process holds (the per-request tallies' growth,
        its collectors, its bound gauges) to its files, for whichever worker answers the
        next scrape. Nothing otherwise."""
        for tally in self._tallies:
            tally.publish()
        if self._mirror is not None:
            self._mirror.publish()

    def render(self) -> bytes:
        self.publish()
        return generate_latest(self._exposition)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
