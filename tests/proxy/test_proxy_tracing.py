"""The proxy's spans for SDK requests: sampled by ``CRIVLINE_TRACE_REQUEST_RATIO``, a child
of the caller's ``traceparent``, and — with tracing off or a zero ratio — no tracing code
on the request path at all. Real proxy, real Valkey, the SDK's in-memory exporter."""

from __future__ import annotations

import aiohttp
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from support.edgekit import Feeder, StartProxy, flag, make_key, new_env
from support.tracekit import memory_tracing, named, parent_id, trace_id, traceparent

from crivline.tracing import DISABLED
from proxy.middleware import edge_middleware

TRACE, SPAN = 0x1234, 0x5678


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def test_a_sampled_sdk_request_is_a_span_in_the_callers_trace(
    feeder: Feeder, start_proxy: StartProxy, exporter: InMemorySpanExporter
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter))
    await proxy.loaded(env)
    exporter.clear()  # the environment's first load

    caller = traceparent(TRACE, SPAN)
    polled = await proxy.get("/sdk/v1/flags", headers={**key.headers, "traceparent": caller})
    assert polled.status == 200
    evaluated = await proxy.post(
        "/ofrep/v1/evaluate/flags/a", json={"context": {}}, headers=key.headers
    )
    assert evaluated.status == 200
    refused = await proxy.get("/sdk/v1/flags", headers={"X-API-Key": "crv_srv_" + "x" * 40})
    assert refused.status == 401
    # Not SDK requests, or streams: no span.
    assert (await proxy.get("/healthz")).status == 200
    stream = await proxy.session.get(
        proxy.url + "/sdk/v1/stream",
        headers=key.headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    assert stream.status == 200
    stream.close()

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "GET /sdk/v1/flags",
        "POST /ofrep/v1/evaluate/flags/{key}",
        "GET /sdk/v1/flags",
    ]
    poll, single, unknown = spans
    assert poll.kind is SpanKind.SERVER
    assert trace_id(poll) == TRACE
    assert parent_id(poll) == SPAN
    assert poll.attributes == {
        "http.request.method": "GET",
        "http.route": "/sdk/v1/flags",
        "http.response.status_code": 200,
    }
    assert single.parent is None
    assert single.attributes is not None
    assert single.attributes["http.route"] == "/ofrep/v1/evaluate/flags/{key}"
    # A refused request is the client's error, not the server's.
    assert unknown.attributes is not None
    assert unknown.attributes["http.response.status_code"] == 401
    assert unknown.status.status_code is StatusCode.UNSET


async def test_only_the_configured_share_of_requests_is_traced(
    feeder: Feeder, start_proxy: StartProxy, exporter: InMemorySpanExporter
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy(
        tracing=memory_tracing("crivline-proxy", exporter, request_ratio=0.25)
    )
    await proxy.loaded(env)
    for _ in range(400):
        assert (await proxy.get("/sdk/v1/flags", headers=key.headers)).status == 200
    traced = len(named(exporter.get_finished_spans(), "GET /sdk/v1/flags"))
    # Binomial(400, 0.25): mean 100, standard deviation 8.7 — these bounds are ±6 of them.
    assert 48 <= traced <= 152


async def test_without_request_tracing_the_plain_middleware_serves(
    feeder: Feeder, start_proxy: StartProxy, exporter: InMemorySpanExporter
) -> None:
    """Tracing off, or on with a zero request ratio: the request path is exactly the one
    without tracing (the same middleware object), and no request makes a span — while
    the applies of a traced proxy are still recorded."""
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()
    off = await start_proxy(tracing=DISABLED)
    zero = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter, request_ratio=0))
    sampled = await start_proxy(tracing=memory_tracing("crivline-proxy", exporter))
    assert list(off.app.middlewares) == [edge_middleware]
    assert list(zero.app.middlewares) == [edge_middleware]
    assert list(sampled.app.middlewares) != [edge_middleware]
    await zero.loaded(env)
    exporter.clear()
    for proxy in (off, zero):
        assert (await proxy.get("/sdk/v1/flags", headers=key.headers)).status == 200
    assert exporter.get_finished_spans() == ()

    version = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    for proxy in (off, zero, sampled):
        await proxy.loaded(env, version)
    applied = named(exporter.get_finished_spans(), "proxy apply")
    assert len(applied) == 2  # the zero-ratio proxy and the sampled one, not the untraced
