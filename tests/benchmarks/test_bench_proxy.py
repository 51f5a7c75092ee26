"""Micro-benchmarks of the proxy's hot path (``make bench-micro``).

What a request costs inside the process, without the network: the key lookup, the
ETag/304 answer, building a single OFREP answer, a bulk answer (from the cache and
evaluated), and the SSE side — building a version's events and fanning one out. The
objects are the production ones, filled directly (no Redis is needed to measure
in-memory work); handlers run on a private event loop.

With ``--benchmark-disable`` (the default in ``make test``) each runs once, as a test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from subprocess import DEVNULL
from typing import Any
from unittest import mock

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_writer import _serialize_headers
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from redis.asyncio import Redis

from crivline import keyspace as ks
from crivline import tokens
from crivline.plans import EdgePlan
from crivline.settings import Settings
from proxy import appkeys, auth, headers, prerendered
from proxy.app import create_app
from proxy.context import parse_context
from proxy.edge.environments import EnvironmentCache, build_state, patch_event
from proxy.edge.keys import KeyIndex, KeyInfo
from proxy.fairness import FAIRNESS, Fairness
from proxy.hub import SDK, Hub
from proxy.metering import Meter
from proxy.options import ProxyOptions
from proxy.quota import PlanBook, Quota
from proxy.ratelimit import RateLimiter
from proxy.routes import ofrep as routes_ofrep
from proxy.routes import sdk as routes_sdk
from proxy.tickets import TicketSigner

pytestmark = pytest.mark.benchmark

ENV = str(uuid.uuid4())
SECRET = tokens.generate(tokens.SecretKind.SERVER)


def flag_set(n: int = 50) -> bytes:
    flags: dict[str, Any] = {}
    for i in range(n):
        flags[f"static-{i}"] = {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        }
        flags[f"targeted-{i}"] = {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B"},
            "defaultVariant": "a",
            "targeting": {
                "if": [
                    {"in": [{"var": "plan"}, ["pro", "enterprise"]]},
                    "b",
                    {"fractional": [["a", 50], ["b", 50]]},
                ]
            },
        }
    doc = {"flags": flags, "metadata": {"flagSetId": "app/production"}}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def fields(version: int = 7) -> dict[str, bytes]:
    return {
        ks.F_VERSION: str(version).encode(),
        ks.F_FLAGSET: flag_set(),
        ks.F_ENVIRONMENT: ENV.encode(),
        ks.F_COMMITTED_AT: b"1771622898.5",
        ks.F_APPLIED_AT: b"1771622898.6",
    }


async def fill(application: web.Application) -> None:
    """Fill an app's components in memory, as if loaded from Redis (nothing connects)."""
    redis = Redis.from_url("redis://127.0.0.1:1/0")  # never connected
    options = application[appkeys.OPTIONS]
    keyspace = application[appkeys.KEYSPACE]
    metrics = application[appkeys.METRICS]
    keys = KeyIndex(redis, keyspace)
    keys._add(KeyInfo(tokens.hex_digest(SECRET), str(uuid.uuid4()), ENV, "p", "t", "server", None))
    hub = Hub(metrics, options, max_streams=100_000, max_streams_per_key=100_000)
    status = application[appkeys.STATUS]
    status.redis_back()
    # Fresh, as a running edge is: loaded, syncd alive and reconciled (no Crivline-Stale).
    status.loaded(True)
    status.observed(syncd_alive=True, epoch="bench", reconciled_at=time.time())
    cache = EnvironmentCache(
        redis, keyspace, keys=keys, hub=hub, metrics=metrics, status=status, options=options
    )
    cache._install(build_state(fields()))
    signer = TicketSigner()
    signer.use_secret(b"benchmark")
    application[appkeys.REDIS] = redis
    application[appkeys.KEYS] = keys
    application[appkeys.HUB] = hub
    application[appkeys.CACHE] = cache
    application[appkeys.LIMITER] = RateLimiter(redis, keyspace, 0)
    # Metering and the quota check on, with a limit the benchmark never reaches.
    meter, plans = Meter(redis, keyspace), PlanBook(redis, keyspace)
    plans.plans["t"] = EdgePlan("pro", 10**15, None)
    application[appkeys.METER], application[appkeys.PLANS] = meter, plans
    application[appkeys.QUOTA] = Quota(plans, meter, enforce=True)
    application[appkeys.TICKETS] = signer
    settings = application[appkeys.SETTINGS]
    application[FAIRNESS] = Fairness(
        hub,
        metrics,
        max_streams_per_tenant=settings.max_streams_per_tenant,
        max_streams_per_environment=settings.max_streams_per_environment,
        evaluation_share=settings.tenant_evaluation_share,
    )


@pytest.fixture(scope="module")
def app() -> Iterator[web.Application]:
    """An app whose components are filled in memory (as if loaded from Redis)."""
    settings = Settings.from_env({}, redis_url="redis://127.0.0.1:1/0", rate_limit_per_second=0)
    application = create_app(settings, ProxyOptions())
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(fill(application))
        yield application
        loop.run_until_complete(application[appkeys.REDIS].aclose())
    finally:
        loop.close()


def request(app: web.Application, method: str, path: str, **headers: str) -> web.Request:
    return make_mocked_request(
        method, path, headers=CIMultiDict({"Authorization": f"Bearer {SECRET}", **headers}), app=app
    )


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a handler that never has to wait (everything it needs is in memory) without an
    event loop round, so the benchmark measures the handler's own work."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the handler waited for something: not the in-memory hot path")


def test_key_lookup(benchmark: Any, app: web.Application) -> None:
    keys = app[appkeys.KEYS]

    def lookup() -> Any:
        info = keys.cached(auth.key_hash(SECRET))
        assert isinstance(info, KeyInfo)
        return info.expired(time.time())

    assert benchmark(lookup) is False


def test_etag_304_path(benchmark: Any, app: web.Application) -> None:
    etag = app[appkeys.CACHE].get(ENV).etag  # type: ignore[union-attr]
    req = request(app, "GET", "/sdk/v1/flags", **{"If-None-Match": etag})
    assert benchmark(lambda: drive(routes_sdk.flags(req))).status == 304


def test_full_flag_set_200(benchmark: Any, app: web.Application) -> None:
    req = request(app, "GET", "/sdk/v1/flags")
    assert benchmark(lambda: drive(routes_sdk.flags(req))).status == 200


@pytest.mark.parametrize("kind", ["prerendered", "aiohttp"])
def test_answer_head_304(benchmark: Any, app: web.Application, kind: str) -> None:
    """The head of a 304 as bytes: pre-rendered (a lookup by the headers' values, the
    Date line per second) against aiohttp building and serialising its multidict."""
    state = app[appkeys.CACHE].get(ENV)
    assert state is not None
    out = {**headers.answer(state, app[appkeys.STATUS]), "ETag": state.etag}

    def pre() -> bytes:
        return prerendered.Prerendered(304, dict(out))._head()

    def plain() -> bytes:
        fields = CIMultiDict(out)
        fields["Date"] = "Mon, 07 Dec 2026 23:02:17 GMT"
        fields["Server"] = SERVER_SOFTWARE
        return _serialize_headers("HTTP/1.1 304 Not Modified", fields)

    assert benchmark(pre if kind == "prerendered" else plain).startswith(b"HTTP/1.1 304 ")


@pytest.mark.parametrize("key", ["static-3", "targeted-3"])
def test_single_evaluation_response(benchmark: Any, app: web.Application, key: str) -> None:
    state = app[appkeys.CACHE].get(ENV)
    assert state is not None
    body = b'{"context":{"targetingKey":"user-123","plan":"free","email":"a@example.com"}}'

    def single() -> bytes:
        context = parse_context(body, key=key, max_depth=16, max_nodes=10_000)
        return state.flags.evaluate(key, context).to_json()

    assert b'"reason"' in benchmark(single)


BATCH = 100


@pytest.mark.parametrize("key", ["static-3", "targeted-3"])
def test_ofrep_single_handler_x100(benchmark: Any, app: web.Application, key: str) -> None:
    """The whole OFREP single-evaluation handler (gate, body, context, evaluation,
    answer), :data:`BATCH` requests in one task: a round's time / 100 is one request's."""
    body = b'{"context":{"targetingKey":"user-123","plan":"free","email":"a@example.com"}}'
    loop = asyncio.new_event_loop()
    payload = aiohttp.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=loop)
    payload.feed_data(body)
    payload.feed_eof()
    path = f"/ofrep/v1/evaluate/flags/{key}"
    req = make_mocked_request(
        "POST",
        path,
        headers=CIMultiDict(
            {
                "Authorization": f"Bearer {SECRET}",
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            }
        ),
        app=app,
        payload=payload,
        match_info={"key": key},
    )

    async def batch() -> web.Response:
        for _ in range(BATCH):
            response = await routes_ofrep.evaluate_flag(req)
        return response

    try:
        response = benchmark(lambda: loop.run_until_complete(batch()))
    finally:
        loop.close()
    assert response.status == 200
    assert isinstance(response.body, bytes)
    assert b'"reason"' in response.body


def bulk_request(app: web.Application, body: bytes) -> tuple[web.Request, Callable[[], Any]]:
    req = request(app, "POST", "/ofrep/v1/evaluate/flags", Host="edge.example")
    state = app[appkeys.CACHE].get(ENV)
    info = app[appkeys.KEYS].cached(auth.key_hash(SECRET))
    assert state is not None
    assert isinstance(info, KeyInfo)
    return req, lambda: routes_ofrep._bulk(req, info, state, body, {})


def test_bulk_evaluation_cached(benchmark: Any, app: web.Application) -> None:
    _, answer = bulk_request(app, b'{"context":{"targetingKey":"user-1","plan":"pro"}}')
    answer()  # fills the bulk cache
    assert benchmark(answer).status == 200


def test_bulk_evaluation_uncached(benchmark: Any, app: web.Application) -> None:
    state = app[appkeys.CACHE].get(ENV)
    assert state is not None
    counter = iter(range(10**9))
    req, _ = bulk_request(app, b"")

    def evaluate() -> bytes:
        body = b'{"context":{"targetingKey":"user-%d","plan":"free"}}' % next(counter)
        return routes_ofrep._evaluate(state, routes_ofrep._context(req, body, None))

    assert benchmark(evaluate).startswith(b'{"flags":[')


def test_bulk_304(benchmark: Any, app: web.Application) -> None:
    body = b'{"context":{"targetingKey":"user-1","plan":"pro"}}'
    _, answer = bulk_request(app, body)
    etag = answer().headers["ETag"]
    req = request(app, "POST", "/ofrep/v1/evaluate/flags", **{"If-None-Match": etag})
    state = app[appkeys.CACHE].get(ENV)
    info = app[appkeys.KEYS].cached(auth.key_hash(SECRET))
    assert state is not None
    assert isinstance(info, KeyInfo)
    assert benchmark(lambda: routes_ofrep._bulk(req, info, state, body, {})).status == 304


def test_sse_events_built_once_per_version(benchmark: Any) -> None:
    raw = fields(8)
    state = benchmark(lambda: build_state(raw))
    assert state.put_event.startswith(b"id: 8\nevent: put\ndata: ")


@pytest.mark.parametrize("incremental", [False, True], ids=["full-compile", "incremental"])
@pytest.mark.parametrize("flags", [100, 1000])
def test_apply_a_one_flag_change(benchmark: Any, flags: int, incremental: bool) -> None:
    """A new version that changes one flag, applied: ``build_state`` with the previous
    version (only that flag compiled again) against compiling the whole set."""
    before = fields(7) | {ks.F_FLAGSET: flag_set(flags // 2)}
    doc = orjson.loads(before[ks.F_FLAGSET])
    doc["flags"]["targeted-3"]["defaultVariant"] = "b"
    after = fields(8) | {ks.F_FLAGSET: orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)}
    previous = build_state(before)
    state = benchmark(lambda: build_state(after, previous=previous if incremental else None))
    assert len(state.flags) == flags
    assert state.flags.evaluate("targeted-3", {}).variant == "b"


def test_sse_patch_event_building(benchmark: Any) -> None:
    delta = {"flags": {"static-1": {"state": "DISABLED"}}, "removed": [], "evaluators": {}}
    assert benchmark(lambda: patch_event(9, 8, delta)).data.startswith(b"id: 9\nevent: patch\n")


class DiscardingSocket:
    """A client socket that takes every write at once (the kernel accepted it)."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        raise AssertionError("a reading client was cut off")


def test_sse_fan_out_to_1000_clients(benchmark: Any, app: web.Application) -> None:
    """One change to 1,000 attached streams: everything the proxy does per client, up to
    the socket's ``write`` (each client's write is one call on its transport)."""
    hub = Hub(app[appkeys.METRICS], ProxyOptions(), max_streams=10_000, max_streams_per_key=10_000)
    clients = [hub.open("fan", f"k{i % 50}", SDK, 0, None) for i in range(1000)]
    sockets = [DiscardingSocket() for _ in clients]
    for client, socket in zip(clients, sockets, strict=True):
        client.attach(socket, chunked=True)
    event = patch_event(1, 0, {"flags": {}})
    version = iter(range(1, 10**9))

    def publish() -> None:
        v = next(version)
        hub.publish_sdk("fan", v, [patch_event(v, v - 1, {})], event.data)

    benchmark(publish)
    assert all(c.version > 0 for c in clients)
    assert all(s.writes == sockets[0].writes > 0 for s in sockets)


# -- through the network: a real `crivline proxy` process and an HTTP client -------------


HTTP_REQUESTS = 10000
HTTP_CONCURRENCY = 32


@pytest.fixture
async def proxy_process(redis_url: str) -> AsyncIterator[tuple[str, str, str, int]]:
    """`crivline proxy` (one worker, uvloop) on the test Valkey with one environment."""
    from crivline.edge_store import EdgeStore
    from crivline.embedded import free_port
    from crivline.keyspace import Keyspace
    from crivline.snapshot import EdgeKey, EnvironmentSnapshot

    redis = Redis.from_url(redis_url)
    store = EdgeStore(redis, Keyspace("bench:", "bench"))
    client = tokens.generate(tokens.SecretKind.CLIENT)
    doc = orjson.loads(flag_set())
    snapshot = EnvironmentSnapshot(
        ENV, "production", str(uuid.uuid4()), "app", str(uuid.uuid4()), "acme", 1, doc,
        (
            EdgeKey(tokens.hex_digest(SECRET), str(uuid.uuid4()), "server", None),
            EdgeKey(tokens.hex_digest(client), str(uuid.uuid4()), "client", None),
        ),
    )  # fmt: skip
    await store.apply(snapshot, base_version=0, base_flag_set=None, committed_at=time.time())
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(
        CRIVLINE_REDIS_URL=redis_url,
        CRIVLINE_PROXY_PORT=str(port),
        CRIVLINE_KEY_PREFIX="bench:",
        CRIVLINE_EDGE_ID="bench",
        CRIVLINE_RATE_LIMIT="0",
        CRIVLINE_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crivline", "proxy", env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(
                        url + "/sdk/v1/flags", headers={"X-API-Key": SECRET}
                    ) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        yield url, SECRET, client, proc.pid
    finally:
        proc.terminate()
        await proc.wait()
        await redis.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, make: Callable[[aiohttp.ClientSession], Any], count: int, pid: int
) -> dict[str, float]:
    """``count`` requests, ``HTTP_CONCURRENCY`` at a time: throughput, latencies, and the
    proxy's own CPU time per request (which does not depend on how fast the client is)."""
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = iter(range(count))

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                async with make(session) as response:
                    await response.read()
                    assert response.status in (200, 304), response.status
                latencies.append(time.perf_counter() - started)

        cpu = cpu_seconds(pid)
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(HTTP_CONCURRENCY)))
        elapsed = time.perf_counter() - began
        cpu = cpu_seconds(pid) - cpu
    latencies.sort()
    return {
        "requests_per_second": round(count / elapsed),
        "proxy_cpu_us_per_request": round(cpu / count * 1e6),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


@pytest.mark.parametrize("kind", ["flags_304", "ofrep_single", "ofrep_bulk"])
async def test_http_throughput(
    benchmark: Any, proxy_process: tuple[str, str, str, int], kind: str
) -> None:
    url, server, client, pid = proxy_process
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/sdk/v1/flags", headers={"X-API-Key": server}) as first,
    ):
        etag = first.headers["ETag"]
    body = b'{"context":{"targetingKey":"user-1","plan":"pro"}}'
    makers: dict[str, Callable[[aiohttp.ClientSession], Any]] = {
        "flags_304": lambda s: s.get(
            url + "/sdk/v1/flags", headers={"X-API-Key": server, "If-None-Match": etag}
        ),
        "ofrep_single": lambda s: s.post(
            url + "/ofrep/v1/evaluate/flags/targeted-3",
            data=body,
            headers={"X-API-Key": client, "Content-Type": "application/json"},
        ),
        "ofrep_bulk": lambda s: s.post(
            url + "/ofrep/v1/evaluate/flags",
            data=body,
            headers={"X-API-Key": client, "Content-Type": "application/json"},
        ),
    }
    count = 100 if benchmark.disabled else HTTP_REQUESTS
    await load(url, makers[kind], 50, pid)  # warm up
    stats = await load(url, makers[kind], count, pid)
    benchmark.extra_info.update(stats)
    print(f"\n{kind}: {stats}")
    benchmark.pedantic(lambda: None, rounds=1)  # the numbers are in extra_info
