"""One trace per change across the real stack: control → Postgres → syncd → Valkey → proxy.

Control, two edges' syncd daemons (each under its own key prefix, as separate edge Redis
instances would be) and three proxy processes' apps (two at the first edge, one at the
second) run in this process, each with its own SDK tracer provider and service name, all
exporting to one in-memory exporter. A change made through the control API must give:
the control write span (a child of the caller's ``traceparent``), one syncd apply span per
edge whose parent is that write span, and one proxy apply span per proxy process whose
parent is its own edge's syncd span — all in the caller's trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.edgekit import (
    EDGE,
    PREFIX,
    Central,
    RunningProxy,
    StartProxy,
    running_central,
    running_syncd,
)
from support.tracekit import (
    memory_tracing,
    named,
    parent_id,
    service,
    span_id,
    trace_id,
    traceparent,
)
from support.waiting import eventually

from crivline import keyspace as ks
from crivline.keyspace import Keyspace
from crivline.tracing import DISABLED
from proxy import appkeys

CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
OTHER_EDGE, OTHER_PREFIX = "edge-2", "t2:"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def make_flag(central: Central) -> tuple[str, str]:
    """A project with a flag and a server key in ``prod``; the environment id and key."""
    await central.shop()
    key, _ = await central.create_key("shop", "prod", "server")
    return await central.environment_id("shop", "prod"), key


async def traced_change(central: Central, variant: str, tp: str | None) -> int:
    """Set the flag's state through the control API with the caller's ``traceparent``."""
    headers = {"Authorization": f"Bearer {central.token}"}
    if tp is not None:
        headers["traceparent"] = tp
    async with central.session.put(
        f"{central.url}/api/v1/projects/shop/flags/checkout/environments/prod",
        json={"state": "ENABLED", "defaultVariant": variant},
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["environmentVersion"])


def of_version(spans: list[ReadableSpan], name: str, version: int) -> list[ReadableSpan]:
    return [
        s
        for s in named(spans, name)
        if s.attributes is not None and s.attributes.get("crivline.version") == version
    ]


def attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


async def central_version(central: Central, env: str) -> int:
    return int(await central.db.fetchval("SELECT version FROM environments WHERE id=$1", env))


async def spans_of(
    exporter: InMemorySpanExporter, name: str, version: int, edge: str | None = None
) -> list[ReadableSpan]:
    """Every finished span, once one named ``name`` for ``version`` (at ``edge``, when
    given) is among them."""

    def found() -> list[ReadableSpan] | None:
        spans = list(exporter.get_finished_spans())
        at = [
            s
            for s in of_version(spans, name, version)
            if edge in (None, attribute(s, "crivline.edge"))
        ]
        return spans if at else None

    found_spans: list[ReadableSpan] = await eventually(found, within=10, what=f"{name} {version}")
    return found_spans


async def all_loaded(proxies: list[RunningProxy], env: str, version: int) -> None:
    for proxy in proxies:
        await proxy.loaded(env, version)


@pytest.fixture
async def two_edges(
    database_url: str, redis_url: str, db: Any, exporter: InMemorySpanExporter
) -> AsyncIterator[Central]:
    async with (
        running_central(
            database_url,
            redis_url,
            db,
            tracing=memory_tracing("crivline-control", exporter),
            syncd_tracing=memory_tracing("crivline-syncd", exporter),
        ) as central,
        running_syncd(
            database_url,
            redis_url,
            edge=OTHER_EDGE,
            prefix=OTHER_PREFIX,
            tracing=memory_tracing("crivline-syncd", exporter),
        ),
    ):
        yield central


async def test_one_trace_from_the_control_commit_to_every_proxy_that_applied_it(
    two_edges: Central,
    start_proxy: StartProxy,
    exporter: InMemorySpanExporter,
    redis: aioredis.Redis,
) -> None:
    central = two_edges
    env, _key = await make_flag(central)
    proxies = [
        await start_proxy(tracing=memory_tracing("crivline-proxy", exporter)),
        await start_proxy(tracing=memory_tracing("crivline-proxy", exporter)),
        await start_proxy(
            tracing=memory_tracing("crivline-proxy", exporter),
            key_prefix=OTHER_PREFIX,
            edge_id=OTHER_EDGE,
        ),
    ]
    current = await central_version(central, env)
    await all_loaded(proxies, env, current)

    version = await traced_change(central, "on", traceparent(CALLER_TRACE, CALLER_SPAN))
    await all_loaded(proxies, env, version)

    def complete() -> list[ReadableSpan] | None:
        spans = list(exporter.get_finished_spans())
        done = len(of_version(spans, "syncd apply", version)) == 2
        return spans if done and len(of_version(spans, "proxy apply", version)) == 3 else None

    spans = await eventually(complete, within=10, what="the change's spans from every part")

    writes = [s for s in named(spans, "control write") if trace_id(s) == CALLER_TRACE]
    assert len(writes) == 1
    (write,) = writes
    assert service(write) == "crivline-control"
    assert parent_id(write) == CALLER_SPAN
    assert attribute(write, "http.request.method") == "PUT"
    assert attribute(write, "http.response.status_code") == 200
    assert list(attribute(write, "crivline.versions")) == [version]
    assert [e.name for e in write.events] == ["committed"]

    syncd = {attribute(s, "crivline.edge"): s for s in of_version(spans, "syncd apply", version)}
    assert set(syncd) == {EDGE, OTHER_EDGE}
    for span in syncd.values():
        assert service(span) == "crivline-syncd"
        assert trace_id(span) == CALLER_TRACE
        assert parent_id(span) == span_id(write)
        assert attribute(span, "crivline.outcome") == "applied"

    applied = of_version(spans, "proxy apply", version)
    assert sorted(attribute(s, "crivline.edge") for s in applied) == [EDGE, EDGE, OTHER_EDGE]
    for span in applied:
        assert service(span) == "crivline-proxy"
        assert trace_id(span) == CALLER_TRACE
        assert parent_id(span) == span_id(syncd[attribute(span, "crivline.edge")])
        assert attribute(span, "crivline.environment") == env
        assert attribute(span, "crivline.base") == current

    # What the proxies read it from: the edge Redis entry names syncd's span.
    for prefix, edge in ((PREFIX, EDGE), (OTHER_PREFIX, OTHER_EDGE)):
        keyspace = Keyspace(prefix, edge)
        held = await redis.hget(keyspace.environment(env), ks.F_TRACEPARENT)
        expected = traceparent(CALLER_TRACE, span_id(syncd[edge]))
        assert held == expected.encode()
        (_id, entry), *_ = await redis.xrevrange(keyspace.deltas(env), count=1)
        assert entry[b"tp"] == expected.encode()
        assert int(entry[b"v"]) == version


async def test_a_burst_applied_at_once_links_every_change_it_carried(
    two_edges: Central, start_proxy: StartProxy, exporter: InMemorySpanExporter
) -> None:
    """Changes that reach a proxy together are one apply: its parent is the newest
    version's syncd span, and it links the syncd spans of the versions in between."""
    central = two_edges
    env, _key = await make_flag(central)
    proxy = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter))
    await proxy.loaded(env, await central_version(central, env))
    # Hold the proxy's refreshes while three changes land in Redis one by one: once no
    # refresh runs (one already running would go on reading), take every load permit.
    cache = proxy[appkeys.CACHE]
    await eventually(lambda: not cache._workers, what="the proxy's refreshes done")
    versions: list[int] = []
    async with _held(cache):
        for variant in ("on", "off", "on"):
            versions.append(await traced_change(central, variant, None))
            await spans_of(exporter, "syncd apply", versions[-1], EDGE)  # this edge's
    await proxy.loaded(env, versions[-1])
    spans = list(exporter.get_finished_spans())
    (applied,) = of_version(spans, "proxy apply", versions[-1])
    syncd = {
        attribute(s, "crivline.version"): s
        for s in named(spans, "syncd apply")
        if attribute(s, "crivline.edge") == EDGE and attribute(s, "crivline.outcome") == "applied"
    }
    assert parent_id(applied) == span_id(syncd[versions[-1]])
    linked = {link.context.span_id for link in applied.links}
    assert attribute(applied, "crivline.base") == versions[0] - 1, (versions, applied.attributes)
    assert linked == {span_id(syncd[v]) for v in versions[:-1]}


class _held:
    """Hold every refresh of a proxy's environment cache (its load semaphore) meanwhile."""

    def __init__(self, cache: Any) -> None:
        self.semaphore = cache._loads
        self.taken = 0

    async def __aenter__(self) -> None:
        # Permits are free, so no acquire waits: nothing else runs until all are taken.
        while not self.semaphore.locked():
            await self.semaphore.acquire()
            self.taken += 1

    async def __aexit__(self, *_exc: object) -> None:
        for _ in range(self.taken):
            self.semaphore.release()


@pytest.mark.parametrize("traced_control", [False, True], ids=["untraced-write", "traced-write"])
async def test_an_untraced_edge_stores_no_trace_context_and_still_applies(
    database_url: str,
    redis_url: str,
    db: Any,
    start_proxy: StartProxy,
    exporter: InMemorySpanExporter,
    redis: aioredis.Redis,
    traced_control: bool,
) -> None:
    """syncd with tracing off writes no trace context into Redis, whatever the write
    carried: the change is applied all the same, and a traced proxy's span starts a trace
    of its own."""
    control = memory_tracing("crivline-control", exporter) if traced_control else DISABLED
    async with running_central(
        database_url, redis_url, db, tracing=control, syncd_tracing=DISABLED
    ) as central:
        env, _key = await make_flag(central)
        proxy = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter))
        await proxy.loaded(env, await central_version(central, env))
        version = await traced_change(central, "on", None)
        await proxy.loaded(env, version)
        spans = await spans_of(exporter, "proxy apply", version)
    (applied,) = of_version(spans, "proxy apply", version)
    assert applied.parent is None
    assert await redis.hget(Keyspace(PREFIX, EDGE).environment(env), ks.F_TRACEPARENT) is None
    assert bool(named(spans, "control write")) is traced_control
    assert not named(spans, "syncd apply")


async def test_a_change_without_a_trace_context_starts_its_trace_at_syncd(
    database_url: str,
    redis_url: str,
    db: Any,
    start_proxy: StartProxy,
    exporter: InMemorySpanExporter,
) -> None:
    """Control with tracing off (like a bump from the CLI) sends no trace context: syncd's
    span starts the trace, and the proxy's is its child."""
    async with running_central(
        database_url,
        redis_url,
        db,
        tracing=DISABLED,
        syncd_tracing=memory_tracing("crivline-syncd", exporter),
    ) as central:
        env, _key = await make_flag(central)
        proxy = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter))
        await proxy.loaded(env, await central_version(central, env))
        version = await traced_change(central, "off", traceparent(CALLER_TRACE, CALLER_SPAN))
        await proxy.loaded(env, version)
        spans = await spans_of(exporter, "proxy apply", version)
    (syncd,) = of_version(spans, "syncd apply", version)
    (applied,) = of_version(spans, "proxy apply", version)
    assert syncd.parent is None
    assert trace_id(syncd) != CALLER_TRACE  # control did not pass the caller's on
    assert parent_id(applied) == span_id(syncd)
    assert trace_id(applied) == trace_id(syncd)


async def test_the_bus_carries_the_trace_context_to_a_bus_only_edge(
    database_url: str,
    redis_url: str,
    db: Any,
    exporter: InMemorySpanExporter,
    start_proxy: StartProxy,
    redis: aioredis.Redis,
) -> None:
    """An edge that hears of changes only through the bus (no LISTEN) still joins the
    write's trace: the bus message carries the same ``tp`` as the notification."""
    from support.control_testkit import control_settings, start_control

    bus_prefix = "bus:"
    settings = control_settings(database_url, bus_url=redis_url, key_prefix=bus_prefix)
    control = await start_control(
        settings, db, tracing=memory_tracing("crivline-control", exporter)
    )
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(Keyspace(bus_prefix).bus)
    try:
        async with running_syncd(
            database_url,
            redis_url,
            tracing=memory_tracing("crivline-syncd", exporter),
            bus_url=redis_url,
            prefix=bus_prefix,
            reconcile_interval=60,  # the change must come by the bus, not a reconciliation
        ) as daemon:
            assert daemon.listener is None
            await control.project("shop", ("prod",))
            await control.flag()
            proxy = await start_proxy(
                tracing=memory_tracing("crivline-proxy", exporter), key_prefix=bus_prefix
            )
            answer = await control.put(
                "/projects/shop/flags/checkout/environments/prod",
                {"state": "ENABLED", "defaultVariant": "on"},
                headers={"traceparent": traceparent(CALLER_TRACE, CALLER_SPAN)},
            )
            assert answer.status == 200, answer
            version = int(answer.body["environmentVersion"])

            def message() -> Any:
                return pubsub.get_message(timeout=0.1)

            async def traced_message() -> dict[str, Any] | None:
                got = await message()
                if got is None:
                    return None
                doc: dict[str, Any] = orjson.loads(got["data"])
                return doc if doc["v"] == version else None

            published = await eventually(traced_message, what="the change on the bus")
            env = published["e"]
            await proxy.loaded(env, version)
            spans = await spans_of(exporter, "proxy apply", version)
    finally:
        await pubsub.aclose()
        await control.client.close()
    (write,) = [s for s in named(spans, "control write") if trace_id(s) == CALLER_TRACE]
    assert published["tp"] == traceparent(CALLER_TRACE, span_id(write))
    (syncd,) = of_version(spans, "syncd apply", version)
    assert attribute(syncd, "crivline.source") == "bus"
    assert parent_id(syncd) == span_id(write)
    (applied,) = of_version(spans, "proxy apply", version)
    assert parent_id(applied) == span_id(syncd)
