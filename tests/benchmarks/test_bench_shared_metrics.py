"""What ``--workers``' shared ``/metrics`` costs a polling request (``make bench-micro``).

A polling request counts itself five times: the request and its latency (the
middleware), the conditional-request result, and two cache lookups (key, environment).
Measured in the same run:

- ``single``: a single proxy's metrics (plain dicts);
- ``worker``: a worker's of ``--workers N`` — the same dicts, whose growth
  :meth:`Metrics.publish` adds to prometheus_client's memory-mapped files once a second;
- ``write-through``: the five events written to the files as they happen (library
  counters and a histogram in multiprocess mode), the way this was not done;
- the in-process 304 answer of ``test_bench_proxy`` (the handler's own work, without
  HTTP: a request over the network costs several times more, so ratios to it are upper
  bounds), and one ``publish`` of a worker with 60 label sets that all grew.

The multiprocess values are made the way a worker makes them: prometheus_client's
value class switched to its multiprocess one, with a private folder, for this test.
"""

from __future__ import annotations

import asyncio
import timeit
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry
from test_bench_proxy import ENV, drive, fill
from test_bench_proxy import request as mocked

from crivline.settings import Settings
from proxy import appkeys
from proxy.app import create_app
from proxy.metrics import Metrics
from proxy.options import ProxyOptions
from proxy.routes import sdk as routes_sdk

pytestmark = pytest.mark.benchmark

ROUNDS, PER_ROUND = 5, 20_000
LABEL_SETS = 60


def one_poll(metrics: Metrics) -> None:
    """The metrics work of one polling request answered 304."""
    metrics.cache_lookup("key", True)
    metrics.cache_lookup("environment", True)
    metrics.conditional_request("sdk_flags", True)
    metrics.observe_request("sdk_flags", "GET", 304, 0.0004)


def write_through() -> Callable[[], None]:
    """The same five events, each written to the files when it happens."""
    requests = Counter("w_requests", "", ["route", "method", "status"], registry=None)
    conditional = Counter("w_conditional", "", ["route", "result"], registry=None)
    cache = Counter("w_cache", "", ["cache", "result"], registry=None)
    latency = Histogram("w_latency", "", ["route"], registry=None)
    request = requests.labels("sdk_flags", "GET", "304")
    not_modified = conditional.labels("sdk_flags", "not_modified")
    key, environment = cache.labels("key", "hit"), cache.labels("environment", "hit")
    duration = latency.labels("sdk_flags")

    def poll() -> None:
        key.inc()
        environment.inc()
        not_modified.inc()
        request.inc()
        duration.observe(0.0004)

    return poll


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """prometheus_client's values as a worker has them: in a private folder's files."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    yield str(tmp_path)
    values.close_all_multiprocess_files()


@pytest.fixture(scope="module")
def app() -> Iterator[web.Application]:
    settings = Settings.from_env({}, redis_url="redis://127.0.0.1:1/0", rate_limit_per_second=0)
    application = create_app(settings, ProxyOptions())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(fill(application))
        yield application
        loop.run_until_complete(application[appkeys.REDIS].aclose())
    finally:
        loop.close()


@pytest.mark.parametrize("mode", ["single", "worker", "write-through"])
def test_metrics_of_one_poll(benchmark: Any, mode: str, files: str) -> None:
    if mode == "write-through":
        benchmark(write_through())
        return
    metrics = Metrics(shared_dir=None if mode == "single" else files)
    benchmark(one_poll, metrics)
    assert metrics.requests.values[("sdk_flags", "GET", "304")] >= 1


def test_a_workers_counting_against_a_polling_request(app: web.Application, files: str) -> None:
    single, worker, through = Metrics(shared_dir=None), Metrics(shared_dir=files), write_through()
    etag = app[appkeys.CACHE].get(ENV).etag
    req = mocked(app, "GET", "/sdk/v1/flags", **{"If-None-Match": etag})

    def poll() -> None:
        assert drive(routes_sdk.flags(req)).status == 304

    # Interleaved rounds, best of each: the machine's load falls on all of them alike.
    rounds = [
        (
            timeit.timeit(lambda: one_poll(single), number=PER_ROUND),
            timeit.timeit(lambda: one_poll(worker), number=PER_ROUND),
            timeit.timeit(through, number=PER_ROUND),
            timeit.timeit(poll, number=PER_ROUND),
        )
        for _ in range(ROUNDS)
    ]
    best = [min(r[i] for r in rounds) / PER_ROUND for i in range(4)]
    in_single, in_worker, in_files, handler = best
    worker.publish()

    # One publish after a second in which LABEL_SETS label sets all grew (the worst case).
    def grown() -> None:
        for i in range(LABEL_SETS):
            worker.requests.inc((f"route{i}", "GET", "200"))

    publishes = []
    for _ in range(ROUNDS):
        grown()
        publishes.append(timeit.timeit(worker.publish, number=1))
    publish = min(publishes)
    print(
        f"\nmetrics of one poll: single {in_single * 1e9:.0f} ns, worker {in_worker * 1e9:.0f}"
        f" ns ({in_worker / in_single:.2f}x), write-through {in_files * 1e9:.0f} ns"
        f" ({in_files / in_single:.1f}x); the 304 handler {handler * 1e9:.0f} ns"
        f" (write-through adds {(in_files - in_single) / handler:.0%} of it);"
        f" one publish of {LABEL_SETS} grown label sets {publish * 1e6:.0f} µs"
        " (once a second)"
    )
    # What the worker counted reached its files, every poll of every round.
    count = ROUNDS * PER_ROUND
    registry = CollectorRegistry()
    MultiProcessCollector(registry, files)  # type: ignore[no-untyped-call]
    labels = {"route": "sdk_flags", "method": "GET", "status": "304"}
    assert single.requests.values[("sdk_flags", "GET", "304")] == count
    assert registry.get_sample_value("crivline_proxy_requests_total", labels) == count
    assert registry.get_sample_value("w_requests_total", labels) == count
