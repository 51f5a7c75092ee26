"""What tracing costs the polling path (``make bench-micro``), as ratios within one run.

One polling request through the app's own middleware chain and the ``/sdk/v1/flags``
handler, in process (the production objects, filled in memory as in
``test_bench_proxy.py``; no network), for four builds of the proxy app measured in
alternating rounds:

- ``no-tracing``: ``create_app`` as before tracing existed (no tracing argument);
- ``off``: tracing configured from an environment without ``OTEL_*`` variables (the
  production default) — the request path must be the one above;
- ``on-ratio-0.01``: tracing on (the SDK with a batch processor and an exporter that
  discards), the default request ratio: one request in a hundred gets a span;
- ``on-ratio-1``: every request a span (the upper bound, for scale).

Leaving out aiohttp's parsing and the network makes each request cheaper, so a
difference shows *larger* here than it would in requests per second over HTTP.
The figures go into the benchmark's ``extra_info`` and are printed; nothing is asserted
about them (the machine is shared and noisy), only that every build answered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from test_bench_proxy import ENV, SECRET, drive, fill

from crivline.settings import Settings
from crivline.tracing import Tracing, configure
from proxy import appkeys
from proxy.app import create_app
from proxy.options import ProxyOptions
from proxy.routes import sdk as routes_sdk

pytestmark = pytest.mark.benchmark

ROUNDS, REQUESTS = 15, 4000


class Discarding(SpanExporter):
    """An exporter that takes every batch and drops it (the collector's cost is not ours)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def tracing_on(ratio: float, exporter: Discarding) -> Tracing:
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "crivline-proxy"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, request_ratio=ratio)


def polling(app: web.Application) -> Callable[[], web.StreamResponse]:
    """One 304 poll through the app's middleware chain and the flags handler."""
    from aiohttp.test_utils import make_mocked_request

    etag = app[appkeys.CACHE].get(ENV).etag  # type: ignore[union-attr]
    headers = CIMultiDict({"Authorization": f"Bearer {SECRET}", "If-None-Match": etag})
    req = make_mocked_request("GET", "/sdk/v1/flags", headers=headers, app=app)
    match = drive(app.router.resolve(req))
    match.add_app(app)
    req._match_info = match
    assert match.route.name == "sdk_flags"
    (middleware,) = app.middlewares

    def poll() -> web.StreamResponse:
        response: web.StreamResponse = drive(middleware(req, routes_sdk.flags))
        return response

    return poll


@pytest.fixture(scope="module")
def builds() -> Iterator[tuple[dict[str, Callable[[], web.StreamResponse]], list[Discarding]]]:
    settings = Settings.from_env({}, redis_url="redis://127.0.0.1:1/0", rate_limit_per_second=0)
    exporters = [Discarding(), Discarding()]
    tracings = {
        "off": configure("crivline-proxy", settings, environ={}),
        "on-ratio-0.01": tracing_on(0.01, exporters[0]),
        "on-ratio-1": tracing_on(1.0, exporters[1]),
    }
    apps = {"no-tracing": create_app(settings, ProxyOptions())}
    apps.update({name: create_app(settings, ProxyOptions(), t) for name, t in tracings.items()})
    loop = asyncio.new_event_loop()
    try:
        for app in apps.values():
            loop.run_until_complete(fill(app))
        yield {name: polling(app) for name, app in apps.items()}, exporters
        for app in apps.values():
            loop.run_until_complete(app[appkeys.REDIS].aclose())
        for tracing in tracings.values():
            loop.run_until_complete(tracing.shutdown())
    finally:
        loop.close()


def per_request(poll: Callable[[], web.StreamResponse], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        poll()
    return (time.perf_counter() - started) / count


def test_tracing_cost_on_the_polling_path(benchmark: Any, builds: Any) -> None:
    polls, exporters = builds
    for poll in polls.values():
        assert poll().status == 304
    rounds, count = (1, 50) if benchmark.disabled else (ROUNDS, REQUESTS)
    samples: dict[str, list[float]] = {name: [] for name in polls}
    for number in range(rounds):
        # Alternate the order so no build always runs first (or last) in a round.
        order = list(polls.items()) if number % 2 == 0 else list(reversed(polls.items()))
        for name, poll in order:
            samples[name].append(per_request(poll, count))
    # The least disturbed round (min) and the typical one (median), each as throughput
    # relative to the build without tracing code.
    base_min, base_median = min(samples["no-tracing"]), statistics.median(samples["no-tracing"])
    stats: dict[str, Any] = {}
    for name, times in samples.items():
        stats[name] = {
            "min_us": round(min(times) * 1e6, 3),
            "median_us": round(statistics.median(times) * 1e6, 3),
            "throughput_ratio_min": round(base_min / min(times), 4),
            "throughput_ratio_median": round(base_median / statistics.median(times), 4),
        }
    stats["spans_exported_at_ratio_0.01"] = exporters[0].spans
    benchmark.extra_info.update(stats)
    print(f"\ntracing on the polling path: {stats}")
    benchmark.pedantic(lambda: None, rounds=1)  # the numbers are in extra_info
