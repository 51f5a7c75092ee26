"""A plain browser ``EventSource`` on the proxy's OFREP event stream, across restarts.

The page (``js/pages/eventsource.html``, another origin) asks the proxy for a bulk
evaluation with a client key, takes the advertised stream URL — a signed ticket, not the
key — and opens an ``EventSource`` on it. Changes go through the control API. The proxy
is stopped and started again on the same port twice; the browser's own reconnection
(no page code) must bring the stream back, sending ``Last-Event-ID``:

- restarted with nothing missed: the next event is the next change, with no replay (the
  ticket names an older version; only ``Last-Event-ID`` tells the proxy it is current);
- restarted after a change it missed: that change is announced as soon as it is back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from browserkit import Page, PageServer, Shop, open_shop
from support.edgekit import EDGE, PREFIX, Central, RunningProxy, StartProxy
from support.waiting import eventually

from crivline.keyspace import F_VERSION, Keyspace

NewPage = Callable[[str], Awaitable[Page]]

# The ticket secret is configured, as on an edge with several proxy hosts: tickets the
# first process issued stay valid in the second from its first request on.
SETTINGS = {"ticket_secret": "browser-tests-ticket-secret"}


async def messages(page: Page) -> list[dict[str, Any]]:
    return list(await page.eval("window.esPage.messages()"))


async def message_for(page: Page, version: int, within: float = 5.0) -> dict[str, Any]:
    found: dict[str, Any] = await page.wait_for(
        f"window.esPage.messages().find(m => m.id === {json.dumps(str(version))})",
        within=within,
        what=f"the event for version {version}",
    )
    return found


async def flip(central: Central, variant: str) -> int:
    return await central.set_state(
        "shop", "new-checkout", "prod", state="ENABLED", defaultVariant=variant
    )


async def restart(proxy: RunningProxy, start_proxy: StartProxy, page: Page) -> RunningProxy:
    """Stop the proxy, see the browser notice, start a new one on the same port."""
    errors = await page.eval("window.esPage.errors")
    port = int(urlsplit(proxy.url).port or 0)
    await proxy.stop()
    await page.wait_for(
        f"window.esPage.errors > {errors} && window.esPage.source.readyState === 0",
        what="the EventSource to notice and start reconnecting",
    )
    return await start_proxy(proxy_port=port, **SETTINGS)


async def reconnect_headers(page: Page, proxy: RunningProxy, count: int) -> list[dict[str, Any]]:
    """The stream requests the browser made, once ``count`` have their headers."""

    async def found() -> list[dict[str, Any]] | None:
        requests = [
            r
            for r in await page.network()
            if r["url"].startswith(proxy.url + "/ofrep/v1/events")
            and r["status"] == 200
            and r["headersComplete"]
        ]
        return requests if len(requests) >= count else None

    result: list[dict[str, Any]] = await eventually(found, what=f"{count} stream connections")
    return result


async def test_eventsource_gets_events_reconnects_and_resumes_with_last_event_id(
    central: Central,
    start_proxy: StartProxy,
    page_server: PageServer,
    new_page: NewPage,
    redis: aioredis.Redis,
) -> None:
    shop: Shop = await open_shop(central, start_proxy, **SETTINGS)
    proxy = shop.proxy
    page = await new_page("eventsource")
    assert await page.goto(page_server.url + "/eventsource.html") == 200
    load_id = await page.eval("window.esPage.loadId")

    answer = await page.eval(
        f"window.esPage.streamUrl({json.dumps(proxy.url)}, {json.dumps(shop.client_key)})"
    )
    assert answer["status"] == 200, answer
    [stream] = answer["streams"]
    assert stream["type"] == "sse"
    url = stream["url"]
    assert url.startswith(proxy.url + "/ofrep/v1/events?")
    assert list(parse_qs(urlsplit(url).query)) == ["ticket"]
    assert shop.client_key not in url

    await page.eval(f"window.esPage.connect({json.dumps(url)})")
    await page.wait_for("window.esPage.opens === 1", what="the stream to open")

    # Events: a change through the control API arrives as refetchEvaluation, id = version.
    v1 = await flip(central, "off")
    event = await message_for(page, v1)
    assert event["event"] == "message"
    assert event["data"]["type"] == "refetchEvaluation"
    assert event["data"]["etag"].startswith(f'"{v1}-')
    assert isinstance(event["data"]["lastModified"], int)
    assert [m["id"] for m in await messages(page)] == [str(v1)]

    # Restart with nothing missed: the browser reconnects by itself and says where it is.
    proxy = await restart(proxy, start_proxy, page)
    await page.wait_for("window.esPage.opens === 2", within=10, what="the reconnection")
    second = (await reconnect_headers(page, proxy, 2))[1]
    assert second["url"] == url  # the same ticket, now checked by another process
    assert second["headers"].get("last-event-id") == str(v1)
    v2 = await flip(central, "on")
    await message_for(page, v2)
    # Nothing was replayed: had the proxy gone by the ticket's version instead of
    # Last-Event-ID, a refetch for v1 would have come first.
    assert [m["id"] for m in await messages(page)] == [str(v1), str(v2)]

    # Restart after a missed change: announced as soon as the stream is back.
    stopped_errors = await page.eval("window.esPage.errors")
    port = int(urlsplit(proxy.url).port or 0)
    await proxy.stop()
    await page.wait_for(
        f"window.esPage.errors > {stopped_errors}", what="the EventSource to notice"
    )
    v3 = await flip(central, "off")  # while no proxy runs

    async def applied() -> bool:
        stored = await redis.hget(Keyspace(PREFIX, EDGE).environment(shop.environment), F_VERSION)
        return stored is not None and int(stored) >= v3

    await eventually(applied, what="syncd to write the missed change to Redis")
    proxy = await start_proxy(proxy_port=port, **SETTINGS)
    await page.wait_for("window.esPage.opens === 3", within=10, what="the second reconnection")
    missed = await message_for(page, v3)
    assert missed["data"]["etag"].startswith(f'"{v3}-')
    third = (await reconnect_headers(page, proxy, 3))[2]
    assert third["headers"].get("last-event-id") == str(v2)
    assert [m["id"] for m in await messages(page)] == [str(v1), str(v2), str(v3)]

    # The same page and the same EventSource object throughout: no reload, no new source.
    assert await page.eval("window.esPage.loadId") == load_id
    kinds = [e["kind"] for e in await page.eval("window.esPage.log")]
    assert kinds.count("open") == 3
