"""Prometheus metrics of one control app, in a registry of its own.

Never the global registry: a process (or a test session) can build many apps, and each
one's numbers must be its own.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from control import access_log
from control.problems import Handler
from crivline.runtime_metrics import add_runtime_collectors


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        add_runtime_collectors(self.registry)
        self.requests = Counter(
            "crivline_control_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crivline_control_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            registry=self.registry,
        )
        self.writes = Counter(
            "crivline_control_writes",
            "Committed write transactions, by action.",
            ["action"],
            registry=self.registry,
        )
        self.write_retries = Counter(
            "crivline_control_write_retries",
            "Write transactions retried after a deadlock or serialization failure.",
            registry=self.registry,
        )
        self.environment_bumps = Counter(
            "crivline_control_environment_bumps",
            "Environment versions bumped by committed writes (one NOTIFY each).",
            registry=self.registry,
        )
        self.bus_messages = Counter(
            "crivline_control_bus_messages",
            "Change messages for the Redis bus, by result (published or failed).",
            ["result"],
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "crivline_control_idempotent_replays",
            "POSTs answered from the Idempotency-Key store instead of being run again.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                seconds = time.perf_counter() - started
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else "unmatched"
                self.requests.labels(request.method, route, str(status)).inc()
                self.latency.labels(route).observe(seconds)
                access_log.record(request, status, seconds)

        return measure
