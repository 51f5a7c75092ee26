"""/healthz, /readyz (a complete, fresh sync — not merely "Redis answered") and /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from support.edgekit import (
    Feeder,
    SSEClient,
    StartProxy,
    flag,
    make_key,
    new_env,
    proxy_settings,
)
from support.probes import assert_probe
from support.waiting import eventually

from proxy import appkeys
from proxy.app import create_app

OpenStream = Callable[..., Awaitable[SSEClient]]


async def test_healthz_answers_without_redis_state(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    response = await proxy.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body == {"status": "ok", "ready": True, "reasons": []}
    assert_probe(body, response.status, endpoint="healthz")


async def test_readyz_needs_syncds_heartbeat_and_a_fresh_complete_sync(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    proxy = await start_proxy()  # Redis answers, the environment is loaded ... but no syncd
    response = await proxy.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert_probe(body, response.status, endpoint="readyz")
    assert body["status"] == "not ready"
    assert body["redis"] == "up"
    assert body["environments"] == 1
    assert "syncd heartbeat missing: syncd is not running for this edge" in body["reasons"]
    assert "no complete sync in redis (sync state has no epoch)" in body["reasons"]
    stale = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert "Crivline-Stale" in stale.headers

    await feeder.synced()

    async def ready() -> bool:
        return (await proxy.get("/readyz")).status == 200

    await eventually(ready, what="ready once syncd's state is there")
    body = await (await proxy.get("/readyz")).json()
    assert_probe(body, 200, endpoint="readyz")
    assert body["status"] == "ready"
    assert body["reasons"] == []
    assert body["syncd"]["heartbeat"] is True
    fresh = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert "Crivline-Stale" not in fresh.headers

    # syncd goes away: still serving from memory, so degraded (200), strict says 503.
    await feeder.redis.delete(feeder.keyspace.heartbeat)

    async def degraded() -> bool:
        return (await (await proxy.get("/readyz")).json())["status"] == "degraded"

    await eventually(degraded, what="degraded without syncd")
    assert (await proxy.get("/readyz")).status == 200
    assert (await proxy.get("/readyz?strict=1")).status == 503


async def test_readyz_says_when_reconciliation_is_too_old(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    await feeder.synced()
    await feeder.redis.hset(feeder.keyspace.sync_state, "reconciled_at", "1000")
    proxy = await start_proxy()

    async def problems() -> list[str]:
        return list((await (await proxy.get("/readyz")).json())["reasons"])

    found = await eventually(problems, what="a freshness problem")
    assert any(p.startswith("last reconciliation") for p in found), found


async def test_metrics_count_what_happens(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy()
    first = await proxy.get("/sdk/v1/flags", headers=key.headers)
    etag = first.headers["ETag"]
    await proxy.get("/sdk/v1/flags", headers={**key.headers, "If-None-Match": etag})
    await proxy.get("/sdk/v1/flags", headers={"X-API-Key": "crv_srv_nobody"})
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await stream.next_event()
    version = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    await stream.next_event()
    await proxy.loaded(env, version)

    response = await proxy.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    for runtime in ("process_resident_memory_bytes", "python_info", "python_gc_"):
        assert runtime in text, runtime
    expected = [
        'crivline_proxy_requests_total{method="GET",route="sdk_flags",status="200"} 1.0',
        'crivline_proxy_requests_total{method="GET",route="sdk_flags",status="304"} 1.0',
        'crivline_proxy_requests_total{method="GET",route="sdk_flags",status="401"} 1.0',
        'crivline_proxy_conditional_requests_total{result="not_modified",route="sdk_flags"} 1.0',
        'crivline_proxy_auth_failures_total{reason="unknown"} 1.0',
        'crivline_proxy_streams_open{kind="sdk"} 1.0',
        'crivline_proxy_stream_events_total{event="put",kind="sdk"} 1.0',
        'crivline_proxy_stream_events_total{event="patch",kind="sdk"} 1.0',
        "crivline_proxy_propagation_lag_seconds_count 1.0",
        'crivline_proxy_stage_seconds_count{stage="fan_out"} 1.0',
        'crivline_proxy_stage_seconds_count{stage="commit_to_first_write"} 1.0',
        'crivline_proxy_stage_seconds_count{stage="commit_to_last_write"} 1.0',
        'crivline_proxy_stage_seconds_count{stage="build"} 2.0',
        "crivline_proxy_environments_loaded 1.0",
        "crivline_proxy_redis_up 1.0",
        'crivline_proxy_request_duration_seconds_count{route="sdk_flags"} 3.0',
    ]
    for line in expected:
        assert line in text, line
    assert 'crivline_proxy_cache_lookups_total{cache="key",result="hit"}' in text
    assert "crivline_proxy_snapshot_age_seconds " in text
    # Each app has its own registry: a second proxy starts from zero.
    other = await start_proxy()
    assert "sdk_flags" not in await (await other.get("/metrics")).text()
    assert proxy[appkeys.METRICS].registry is not other[appkeys.METRICS].registry


async def test_status_page_needs_the_operator_token(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    version = await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    off = await start_proxy()
    assert (await off.get("/status")).status == 404
    proxy = await start_proxy(operator_token="op-secret-of-sixteen+")
    assert (await proxy.get("/status")).status == 401
    assert (await proxy.get("/status", headers=key.headers)).status == 401
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await stream.next_event()
    page = await proxy.get("/status", headers={"Authorization": "Bearer op-secret-of-sixteen+"})
    assert page.status == 200
    body = await page.json()
    assert body["edge"] == "edge-1"
    assert body["keys"] == 1
    [described] = body["environments"]
    assert described["id"] == env
    assert described["version"] == version
    assert described["flags"] == 1
    assert described["streams"] == {"sdk": 1, "ofrep": 0}
    assert "op-secret" not in await page.text()


async def test_the_openapi_document_lists_exactly_the_proxys_routes(
    start_proxy: StartProxy,
) -> None:
    proxy = await start_proxy()
    response = await proxy.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    described = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    app = create_app(proxy_settings("redis://127.0.0.1:1/0"))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }
    assert described == served
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["responses"], operation
