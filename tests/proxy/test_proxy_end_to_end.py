"""The whole path: control API → Postgres → syncd → Valkey → proxy → SDK streams.

Every change here is made through the control API (the only writer of Postgres) and
reaches the proxy only through the real syncd daemon and the edge Valkey.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from support.edgekit import Central, RunningProxy, SSEClient, StartProxy
from support.probes import assert_probe
from support.waiting import eventually

from crivline.embedded import ValkeyServer
from proxy import appkeys

OpenStream = Callable[..., Awaitable[SSEClient]]


@dataclass
class Shop:
    env: str
    server: str
    client: str
    server_id: str
    version: int  # the environment's central version once the shop is set up


async def make_shop(central: Central) -> Shop:
    await central.shop()
    await central.set_state("shop", "checkout", "prod", state="ENABLED", defaultVariant="off")
    server, server_id = await central.create_key("shop", "prod", "server")
    client, _ = await central.create_key("shop", "prod", "client")
    env = await central.environment_id("shop", "prod")
    version = await central.db.fetchval("SELECT version FROM environments WHERE id = $1", env)
    return Shop(env, server, client, server_id, int(version))


async def edge_ready(proxy: RunningProxy, shop: Shop) -> None:
    async def served() -> bool:
        response = await proxy.get("/sdk/v1/flags", headers={"X-API-Key": shop.server})
        return response.status == 200

    await eventually(served, within=10, what="the shop served by the proxy")
    # Served is not current: the last key's bump may still be on its way.
    await proxy.loaded(shop.env, shop.version)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_edit_reaches_sdk_and_ofrep_streams_in_order(
    central: Central, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    shop = await make_shop(central)
    proxy = await start_proxy()
    await edge_ready(proxy, shop)
    sdk = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(shop.server))
    put = await sdk.next_event()
    assert put.event == "put"
    assert orjson.loads(put.data)["flags"]["checkout"]["defaultVariant"] == "off"
    bulk = await proxy.post(
        "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=bearer(shop.client)
    )
    url = (await bulk.json())["eventStreams"][0]["url"]
    ofrep = await open_stream(proxy, url.removeprefix(proxy.url))

    versions = []
    for variant in ("on", "off", "on"):
        versions.append(
            await central.set_state(
                "shop", "checkout", "prod", state="ENABLED", defaultVariant=variant
            )
        )
    patches = [await sdk.next_event() for _ in versions]
    assert [p.event for p in patches] == ["patch"] * 3
    assert [int(p.id or 0) for p in patches] == versions
    assert [orjson.loads(p.data)["flags"]["checkout"]["defaultVariant"] for p in patches] == [
        "on",
        "off",
        "on",
    ]
    refetches = [await ofrep.next_event() for _ in versions]
    assert [int(r.id or 0) for r in refetches] == versions
    assert all(orjson.loads(r.data)["type"] == "refetchEvaluation" for r in refetches)

    evaluation = await proxy.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=bearer(shop.client)
    )
    assert (await evaluation.json())["value"] is True
    assert evaluation.headers["Crivline-Version"] == str(versions[-1])


async def test_reconnect_after_three_missed_edits_gets_exactly_those_three(
    central: Central, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    shop = await make_shop(central)
    proxy = await start_proxy()
    await edge_ready(proxy, shop)
    first = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(shop.server))
    put = await first.next_event()
    first.close()
    missed = [
        await central.set_state("shop", "checkout", "prod", state="ENABLED", defaultVariant=v)
        for v in ("on", "off", "on")
    ]
    await proxy.loaded(shop.env, missed[-1])
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**bearer(shop.server), "Last-Event-ID": put.id or ""}
    )
    got = [await resumed.next_event() for _ in missed]
    assert [(e.event, int(e.id or 0)) for e in got] == [("patch", v) for v in missed]
    # and nothing more until the next edit
    nxt = await central.set_state("shop", "checkout", "prod", state="DISABLED")
    following = await resumed.next_event()
    assert (following.event, int(following.id or 0)) == ("patch", nxt)
    assert not resumed.events


async def test_a_revoked_keys_open_stream_is_closed_within_a_second(
    central: Central, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    shop = await make_shop(central)
    proxy = await start_proxy()
    await edge_ready(proxy, shop)
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(shop.server))
    await stream.next_event()

    await central.ok("DELETE", f"/projects/shop/environments/prod/keys/{shop.server_id}")
    committed = time.monotonic()  # the answer comes after the commit
    raw = await stream.closed(within=1.0)
    assert stream.eof
    assert time.monotonic() - committed < 1.0
    assert raw.endswith(b": key revoked\n\n")
    refused = await proxy.get("/sdk/v1/flags", headers=bearer(shop.server))
    assert refused.status == 401


async def test_valkey_outage_serves_from_memory_and_recovers_with_changes(
    central: Central,
    start_proxy: StartProxy,
    open_stream: OpenStream,
    valkey: ValkeyServer,
) -> None:
    shop = await make_shop(central)
    proxy = await start_proxy()
    await edge_ready(proxy, shop)
    await eventually(lambda: proxy[appkeys.STATUS].degraded_since is None, what="fresh edge")
    sdk = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(shop.server))
    put = await sdk.next_event()
    bulk = await proxy.post(
        "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=bearer(shop.client)
    )
    ofrep = await open_stream(
        proxy, (await bulk.json())["eventStreams"][0]["url"].removeprefix(proxy.url)
    )
    await ofrep.raw_until(1)

    valkey.kill()
    await eventually(lambda: not proxy[appkeys.STATUS].redis_up, what="the proxy to notice")

    flags = await proxy.get("/sdk/v1/flags", headers=bearer(shop.server))
    assert flags.status == 200
    assert flags.headers["Crivline-Version"] == str(shop.version)
    assert flags.headers["ETag"].startswith(f'"{put.id}-')
    assert int(flags.headers["Crivline-Stale"]) >= 0
    evaluation = await proxy.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=bearer(shop.client)
    )
    assert evaluation.status == 200
    assert (await evaluation.json())["value"] is False
    assert "Crivline-Stale" in evaluation.headers
    ready = await proxy.get("/readyz")
    body = await ready.json()
    assert ready.status == 200
    assert_probe(body, ready.status, endpoint="readyz")
    assert body["status"] == "degraded"
    assert body["redis"] == "down"
    assert any("redis unavailable" in p for p in body["reasons"])
    strict = await proxy.get("/readyz?strict=1")
    assert strict.status == 503

    # A change made centrally during the outage...
    during = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="on"
    )
    assert not sdk.eof
    assert not ofrep.eof

    valkey.start()  # ...arrives once Valkey is back (empty: syncd rebuilds it)
    event = await sdk.next_event(within=20)
    assert int(event.id or 0) == during
    assert event.event in ("put", "patch")
    refetch = await ofrep.next_event(within=20)
    assert int(refetch.id or 0) == during
    await eventually(
        lambda: proxy[appkeys.STATUS].degraded_since is None, within=20, what="fresh again"
    )
    after = await proxy.get("/sdk/v1/flags", headers=bearer(shop.server))
    assert after.headers["Crivline-Version"] == str(during)
    assert "Crivline-Stale" not in after.headers
    assert (await proxy.get("/readyz")).status == 200


async def test_a_deleted_environment_leaves_the_edge_its_keys_and_streams_with_it(
    central: Central, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    shop = await make_shop(central)
    proxy = await start_proxy()
    await edge_ready(proxy, shop)
    sdk = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(shop.server))
    assert (await sdk.next_event()).event == "put"
    bulk = await proxy.post(
        "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=bearer(shop.client)
    )
    ofrep = await open_stream(
        proxy, (await bulk.json())["eventStreams"][0]["url"].removeprefix(proxy.url)
    )
    await ofrep.raw_until(1)

    answer = await central.ok("DELETE", "/projects/shop/environments/prod")
    assert answer["environments"] == ["prod"]
    assert {k["kind"] for k in answer["keys"]} == {"server", "client"}

    await sdk.closed()
    await ofrep.closed()
    polled = await proxy.get("/sdk/v1/flags", headers=bearer(shop.server))
    assert polled.status == 401
    evaluated = await proxy.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=bearer(shop.client)
    )
    assert evaluated.status == 401
    assert shop.env not in proxy[appkeys.CACHE]
    served = await central.daemon.store.served()
    assert shop.env not in served
