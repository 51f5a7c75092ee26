"""Control's side of tracing: a span per write, its trace context in the bump's
notification (migration 0006), and a bump without one exactly as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.control_testkit import Control, control_settings, start_control
from support.tracekit import memory_tracing, parent_id, span_id, trace_id, traceparent

from crivline.keyspace import PG_CHANNEL

TRACE, SPAN = 0xABC, 0xDEF


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced_control(
    database_url: str, db: asyncpg.Connection, exporter: InMemorySpanExporter
) -> AsyncIterator[Control]:
    running = await start_control(
        control_settings(database_url), db, tracing=memory_tracing("crivline-control", exporter)
    )
    yield running
    await running.client.close()


@pytest.fixture
async def notifications(database_url: str) -> AsyncIterator[asyncio.Queue[dict[str, object]]]:
    listener = await asyncpg.connect(database_url)
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    await listener.add_listener(PG_CHANNEL, lambda *args: queue.put_nowait(orjson.loads(args[3])))
    yield queue
    await listener.close()


async def next_notification(queue: asyncio.Queue[dict[str, object]]) -> dict[str, object]:
    async with asyncio.timeout(10):
        return await queue.get()


async def test_each_write_is_a_span_whose_context_every_bump_carries(
    traced_control: Control,
    exporter: InMemorySpanExporter,
    notifications: asyncio.Queue[dict[str, object]],
) -> None:
    await traced_control.project("shop", ("dev", "prod"))
    for _ in range(2):
        await next_notification(notifications)  # the two environments' creation
    exporter.clear()

    caller = traceparent(TRACE, SPAN)
    body = {"key": "checkout", "type": "boolean", "variants": {"on": True, "off": False}}
    answer = await traced_control.post(
        "/projects/shop/flags", body, headers={"traceparent": caller}
    )  # bumps dev and prod
    bumps = [await next_notification(notifications) for _ in range(2)]

    (write,) = exporter.get_finished_spans()
    assert write.name == "control write"
    assert write.kind is SpanKind.SERVER
    assert trace_id(write) == TRACE
    assert parent_id(write) == SPAN
    assert write.attributes is not None
    assert write.attributes["http.route"] == "/api/v1/projects/{project}/flags"
    assert write.attributes["http.response.status_code"] == answer.status == 201
    assert write.attributes["crivline.actions"] == ("flag.create",)
    assert sorted(write.attributes["crivline.versions"]) == sorted(b["v"] for b in bumps)
    expected = traceparent(TRACE, span_id(write))
    assert [b["tp"] for b in bumps] == [expected, expected]


async def test_reads_make_no_span_and_refusals_are_not_errors(
    traced_control: Control, exporter: InMemorySpanExporter
) -> None:
    await traced_control.project("shop", ("dev",))
    exporter.clear()
    assert (await traced_control.get("/projects/shop")).status == 200
    assert exporter.get_finished_spans() == ()

    missing = await traced_control.put(
        "/projects/shop/flags/nope/environments/dev", {"state": "ENABLED"}
    )
    assert missing.status == 404
    (refused,) = exporter.get_finished_spans()
    assert refused.attributes is not None
    assert refused.attributes["http.response.status_code"] == missing.status
    assert refused.status.status_code is StatusCode.UNSET
    assert not refused.events  # nothing committed


@pytest.mark.parametrize(
    "given",
    [
        None,
        "garbage",
        "00-" + "A" * 32 + "-" + "1" * 16 + "-01",  # upper case is not W3C
        "00-" + "a" * 32 + "-" + "1" * 16 + "-01; DROP TABLE tenants",
    ],
)
async def test_a_bump_without_a_valid_trace_context_notifies_exactly_as_before(
    traced_control: Control,
    db: asyncpg.Connection,
    notifications: asyncio.Queue[dict[str, object]],
    given: str | None,
) -> None:
    await traced_control.project("shop", ("dev",))
    created = await next_notification(notifications)
    env = created["e"]

    await db.execute("SELECT crivline_bump_environment($1::uuid)", env)  # the CLI's form
    one_argument = await next_notification(notifications)
    await db.execute("SELECT crivline_bump_environment($1::uuid, $2::text)", env, given)
    two_arguments = await next_notification(notifications)
    for payload in (one_argument, two_arguments):
        assert set(payload) == {"e", "v", "t", "p", "at"}
    assert two_arguments["v"] == one_argument["v"] + 1  # type: ignore[operator]


async def test_a_bump_with_a_trace_context_carries_it(
    traced_control: Control,
    db: asyncpg.Connection,
    notifications: asyncio.Queue[dict[str, object]],
) -> None:
    await traced_control.project("shop", ("dev",))
    env = (await next_notification(notifications))["e"]
    tp = traceparent(TRACE, SPAN)
    version = await db.fetchval("SELECT crivline_bump_environment($1::uuid, $2)", env, tp)
    payload = await next_notification(notifications)
    assert payload["v"] == version
    assert payload["tp"] == tp


async def test_a_stripe_webhook_is_a_write_span_whose_bumps_carry_it(
    database_url: str,
    db: asyncpg.Connection,
    exporter: InMemorySpanExporter,
    notifications: asyncio.Queue[dict[str, object]],
) -> None:
    from test_control_plans import PRICES, SECRET, _send, _subscription_event

    settings = control_settings(database_url, stripe_webhook_secret=SECRET, stripe_prices=PRICES)
    billing = await start_control(
        settings, db, tracing=memory_tracing("crivline-control", exporter)
    )
    try:
        await billing.project("shop", ("dev",))
        await next_notification(notifications)
        exporter.clear()
        answer = await _send(billing, _subscription_event("evt_traced", kind="created"))
        assert answer.status == 200, answer
        bump = await next_notification(notifications)  # the plan change bumps dev
    finally:
        await billing.client.close()
    (write,) = exporter.get_finished_spans()
    assert write.attributes is not None
    assert write.attributes["http.route"] == "/webhooks/stripe"
    assert write.context is not None
    flags = f"{int(write.context.trace_flags):02x}"  # sampled, and random (W3C level 2)
    assert bump["tp"] == f"00-{trace_id(write):032x}-{span_id(write):016x}-{flags}"
