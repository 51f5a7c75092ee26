"""Prometheus metrics of one proxy process, in its own registry (one per app).

Everything an operator needs to see the edge's health from the outside: traffic by
route and status, latency, the share of conditional requests answered 304, cache hit
rates, auth failures and rate limiting, open streams and events sent, how old the
served snapshot is and how long a change took from its commit in Postgres to being
handed to this process's stream clients.

Hot-path cost: label children are resolved once and kept in dicts, so a request costs
one counter increment and one histogram observation.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "crivline_proxy_"
        self.requests = Counter(
            p + "requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            p + "request_duration_seconds",
            "Time to answer a request (streams: to open them)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.conditional = Counter(
            p + "conditional_requests",
            "Requests with If-None-Match; result=not_modified is the 304 share",
            ["route", "result"],
            registry=r,
        )
        self.cache = Counter(
            p + "cache_lookups",
            "In-process cache lookups (environment, key, negative_key, bulk)",
            ["cache", "result"],
            registry=r,
        )
        self.auth_failures = Counter(
            p + "auth_failures", "Requests refused by authentication", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            p + "rate_limited", "Requests refused with 429", ["limit"], registry=r
        )
        self.streams_open = Gauge(p + "streams_open", "Open SSE streams", ["kind"], registry=r)
        self.events_sent = Counter(
            p + "stream_events",
            "SSE events handed to stream clients",
            ["kind", "event"],
            registry=r,
        )
        self.stream_closed = Counter(
            p + "streams_closed", "SSE streams ended, by why", ["reason"], registry=r
        )
        self.propagation_lag = Histogram(
            p + "propagation_lag_seconds",
            "From a change's commit in Postgres to its events being handed to stream clients",
            buckets=_LAG_BUCKETS,
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
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latency: dict[str, Histogram] = {}
        self._cache: dict[tuple[str, str], Counter] = {}
        self._events: dict[tuple[str, str], Counter] = {}

    # -- fast paths with cached children ------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = self.latency.labels(route)
        hist.observe(seconds)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        key = (cache, "hit" if hit else "miss")
        counter = self._cache.get(key)
        if counter is None:
            counter = self._cache[key] = self.cache.labels(*key)
        counter.inc()

    def events(self, kind: str, event: str, count: int) -> None:
        key = (kind, event)
        counter = self._events.get(key)
        if counter is None:
            counter = self._events[key] = self.events_sent.labels(*key)
        counter.inc(count)

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

    def render(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
