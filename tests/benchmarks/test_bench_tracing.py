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
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from subprocess import DEVNULL
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from redis.asyncio import Redis
from support.waiting import eventually
from test_bench_proxy import ENV, SECRET, drive, fill

from crivline import tokens
from crivline.edge_store import EdgeStore
from crivline.embedded import free_port
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.snapshot import EdgeKey, EnvironmentSnapshot
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
    """CPU time of this thread per request: time the machine's other work took from us
    is not counted (the batch processor's own thread is not either: see the HTTP run)."""
    started = time.thread_time()
    for _ in range(count):
        poll()
    return (time.thread_time() - started) / count


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


# -- through the network: `crivline proxy` processes with and without tracing ------------

HTTP_ROUNDS, HTTP_REQUESTS = 5, 6000


@asynccontextmanager
async def collector() -> AsyncIterator[tuple[str, list[int]]]:
    """A stand-in OTLP/HTTP collector: takes every export, answers 200, counts bytes."""
    received: list[int] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


@asynccontextmanager
async def proxy_process(redis_url: str, extra: dict[str, str]) -> AsyncIterator[tuple[str, int]]:
    """`crivline proxy` (one worker) on the environment the bench wrote; its URL and pid."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRIVLINE_", "OTEL_"))}
    env.update(
        CRIVLINE_REDIS_URL=redis_url,
        CRIVLINE_PROXY_PORT=str(port),
        CRIVLINE_KEY_PREFIX="bench:",
        CRIVLINE_EDGE_ID="bench",
        CRIVLINE_RATE_LIMIT="0",
        CRIVLINE_LOG_LEVEL="WARNING",
        **extra,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crivline", "proxy", env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def serving() -> bool:
                async with session.get(
                    url + "/sdk/v1/flags", headers={"X-API-Key": SECRET}
                ) as response:
                    return response.status == 200

            await eventually(serving, within=30, what="the proxy", tolerate=(aiohttp.ClientError,))
        yield url, proc.pid
    finally:
        proc.terminate()
        await proc.wait()


async def test_tracing_cost_on_polling_over_http(benchmark: Any, redis_url: str) -> None:
    """304 polls over HTTP against a proxy without ``OTEL_*`` variables and one exporting
    to a local collector with the default request ratio (0.01), in alternating rounds:
    requests per second and the proxy's own CPU time per request."""
    from test_bench_proxy import flag_set, load

    redis = Redis.from_url(redis_url)
    store = EdgeStore(redis, Keyspace("bench:", "bench"))
    key = EdgeKey(tokens.hex_digest(SECRET), str(uuid.uuid4()), "server", None)
    snapshot = EnvironmentSnapshot(
        ENV, "production", str(uuid.uuid4()), "app", str(uuid.uuid4()), "acme", 1,
        orjson.loads(flag_set()), (key,),
    )  # fmt: skip
    await store.apply(snapshot, base_version=0, base_flag_set=None, committed_at=time.time())
    rounds, count = (1, 100) if benchmark.disabled else (HTTP_ROUNDS, HTTP_REQUESTS)
    async with (
        collector() as (endpoint, received),
        proxy_process(redis_url, {}) as plain,
        proxy_process(
            redis_url,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        ) as traced,
    ):
        async with (
            aiohttp.ClientSession() as session,
            session.get(plain[0] + "/sdk/v1/flags", headers={"X-API-Key": SECRET}) as first,
        ):
            etag = first.headers["ETag"]
        headers = {"X-API-Key": SECRET, "If-None-Match": etag}
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on-ratio-0.01": []}
        targets = {"off": plain, "on-ratio-0.01": traced}
        for url, pid in targets.values():  # warm up
            await load(url, lambda s, u=url: s.get(u + "/sdk/v1/flags", headers=headers), 200, pid)
        for number in range(rounds):
            order = list(targets.items())
            for name, (url, pid) in order if number % 2 == 0 else reversed(order):
                stats = await load(
                    url, lambda s, u=url: s.get(u + "/sdk/v1/flags", headers=headers), count, pid
                )
                runs[name].append(stats)
        if not benchmark.disabled:  # the batch processor exports every 5 s by default
            await eventually(lambda: received, within=15, what="spans at the collector")
    await redis.aclose()
    summary: dict[str, Any] = {}
    for name, stats_list in runs.items():
        summary[name] = {
            "requests_per_second": statistics.median(s["requests_per_second"] for s in stats_list),
            "proxy_cpu_us_per_request": statistics.median(
                s["proxy_cpu_us_per_request"] for s in stats_list
            ),
        }
    off, on = summary["off"], summary["on-ratio-0.01"]
    summary["throughput_ratio"] = round(on["requests_per_second"] / off["requests_per_second"], 4)
    summary["cpu_ratio"] = round(
        on["proxy_cpu_us_per_request"] / max(1, off["proxy_cpu_us_per_request"]), 4
    )
    summary["exports_received"] = len(received)
    benchmark.extra_info.update(summary)
    print(f"\ntracing over HTTP: {summary}")
    benchmark.pedantic(lambda: None, rounds=1)
