"""Prometheus metrics of one proxy process, in its own registry (one per app).

Everything an operator needs to see the edge's health from the outside: traffic by
route and status, latency, the share of conditional requests answered 304, cache hit
rates, auth failures and rate limiting, open streams and events sent, how old the
served snapshot is and how long a change took from its commit in Postgres to being
handed to this process's stream clients.

Hot-path cost: the per-request families (requests, latency, conditional requests,
cache lookups, events sent) are plain dicts turned into metric families at scrape time,
so counting a request costs a few dict operations and no lock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from crivline.runtime_metrics import add_runtime_collectors
from crivline.wire import Gate, GateCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_STATUS = {code: str(code) for code in range(100, 600)}
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Tally:
    """A counter family for the hot path: a dict of label values to counts, no locks.

    Only the event loop's thread touches it (requests and scrapes both run there), so a
    plain dict is safe — and six times cheaper than a prometheus_client child's locked
    ``inc()``. :class:`_HotCollector` turns it into a counter family at scrape time.
    """

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount


class LatencyTally:
    """A histogram family for the hot path, per route: bucket counts and sums, no locks."""

    __slots__ = ("bounds", "doc", "name", "routes")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.routes: dict[str, list[float]] = {}  # counts per bucket (+Inf last), then sum

    def observe(self, route: str, seconds: float) -> None:
        row = self.routes.get(route)
        if row is None:
            row = self.routes[route] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, seconds)] += 1
        row[-1] += seconds


class _HotCollector(Collector):
    def __init__(self, tallies: list[Tally], latencies: list[LatencyTally]) -> None:
        self._tallies = tallies
        self._latencies = latencies

    def collect(self) -> Iterable[Metric]:
        for tally in self._tallies:
            family = CounterMetricFamily(tally.name, tally.doc, labels=tally.labels)
            for key, value in tally.values.items():
                family.add_metric(key, value)
            yield family
        for latency in self._latencies:
            histogram = HistogramMetricFamily(latency.name, latency.doc, labels=["route"])
            for route, row in latency.routes.items():
                cumulative, buckets = 0.0, []
                for bound, count in zip((*latency.bounds, math.inf), row[:-1], strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
                histogram.add_metric([route], buckets, row[-1])
            yield histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        add_runtime_collectors(self.registry)
        r = self.registry
        p = "crivline_proxy_"
        self.requests = Tally(
            p + "requests", "HTTP requests answered", ("route", "method", "status")
        )
        self.latency = LatencyTally(
            p + "request_duration_seconds",
            "Time to answer a request (streams: to open them)",
            _LATENCY_BUCKETS,
        )
        self.conditional = Tally(
            p + "conditional_requests",
            "Requests with If-None-Match; result=not_modified is the 304 share",
            ("route", "result"),
        )
        self.cache = Tally(
            p + "cache_lookups",
            "In-process cache lookups (environment, key, negative_key, bulk)",
            ("cache", "result"),
        )
        self.events_sent = Tally(
            p + "stream_events", "SSE events handed to stream clients", ("kind", "event")
        )
        r.register(
            _HotCollector(
                [self.requests, self.conditional, self.cache, self.events_sent], [self.latency]
            )
        )
        self.auth_failures = Counter(
            p + "auth_failures", "Requests refused by authentication", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            p + "rate_limited", "Requests refused with 429", ["limit"], registry=r
        )
        self.streams_open = Gauge(p + "streams_open", "Open SSE streams", ["kind"], registry=r)
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
        self.environments = Gauge(
            p + "environments_loaded", "Environments held in memory", registry=r
        )
        self.snapshot_age = Gauge(
            p + "snapshot_age_seconds",
            "Seconds since syncd last confirmed this edge's Redis matches Postgres",
            registry=r,
        )
        self.stale = Gauge(
            p + "stale_seconds",
            "Seconds this process has been serving possibly stale data (0: fresh)",
            registry=r,
        )
        self.redis_up = Gauge(p + "redis_up", "1 while Redis is reachable", registry=r)

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
        """Gauges read at scrape time from the live objects."""
        self.environments.set_function(environments)
        self.snapshot_age.set_function(snapshot_age)
        self.stale.set_function(stale)
        self.redis_up.set_function(redis_up)

    def bind_gate(self, gate: Gate) -> None:
        """The connection counts of this process's :class:`~crivline.wire.Gate`."""
        self.registry.register(GateCollector(gate, "crivline_proxy_"))

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
