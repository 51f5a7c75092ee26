"""The OpenFeature web SDK with ``@openfeature/ofrep-web-provider``, unmodified, in
headless Chromium, against the proxy on another origin (CORS for real).

The page (``js/pages/ofrep.html``) loads the SDK bundled by esbuild and a client key.
The test checks, from the browser's own network log and the SDK's answers: the provider
initialises; every kind of flag evaluates as our evaluator says; a refetch for the same
context sends ``If-None-Match`` and is answered 304 (and one for a changed context is
not); and a change made through the control API reaches the SDK through the ADR-0008
event stream the bulk answer advertised — without a reload, within a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from browserkit import Page, PageServer, expected_details, open_shop, sdk_flags
from support.edgekit import Central, StartProxy
from support.waiting import eventually

from crivline.flags import compile_flag_set
from proxy import appkeys

NewPage = Callable[[str], Awaitable[Page]]

CONTEXT = {"targetingKey": "user-2", "email": "x@beta.example", "plan": "pro"}
WATCH = {"key": "banner-text", "type": "string", "default": "code-default"}


def bulk_requests(network: list[dict[str, Any]], proxy_url: str) -> list[dict[str, Any]]:
    return [
        r
        for r in network
        if r["url"].split("?")[0] == proxy_url + "/ofrep/v1/evaluate/flags"
        and r["method"] == "POST"
    ]


async def answered_bulk(page: Page, proxy_url: str, count: int) -> list[dict[str, Any]]:
    """The page's bulk evaluation requests, once ``count`` of them have been answered."""

    async def answered() -> list[dict[str, Any]] | None:
        found = bulk_requests(await page.network(), proxy_url)
        done = [
            r
            for r in found
            if r["status"] is not None and r["responseHeaders"] and r["headersComplete"]
        ]
        return found if len(done) >= count else None

    result: list[dict[str, Any]] = await eventually(answered, what=f"{count} bulk answers")
    return result


async def test_web_provider_evaluates_revalidates_and_follows_the_event_stream(
    central: Central,
    start_proxy: StartProxy,
    page_server: PageServer,
    new_page: NewPage,
) -> None:
    shop = await open_shop(central, start_proxy)
    proxy = shop.proxy
    assert urlsplit(page_server.url).netloc != urlsplit(proxy.url).netloc  # another origin
    page = await new_page("ofrep")
    assert await page.goto(page_server.url + "/ofrep.html") == 200
    load_id = await page.eval("window.crivlinePage.loadId")

    # 1. The provider initialises (a CORS preflight, then the bulk evaluation).
    config = {
        "baseUrl": proxy.url,
        "clientKey": shop.client_key,
        "context": CONTEXT,
        "watch": WATCH,
    }
    started = await page.eval(f"window.crivlinePage.start({json.dumps(config)})")
    assert started == {"ready": True, "status": "READY", "error": None}, started

    # 2. Every kind of flag, as our evaluator says for this context.
    compiled = compile_flag_set(await shop.flag_set())
    flags = sdk_flags()
    asked = [{k: f[k] for k in ("key", "type", "default")} for f in flags]
    answers = await page.eval(f"window.crivlinePage.evaluate({json.dumps(asked)})")
    kinds = set()
    for flag, got in zip(flags, answers, strict=True):
        want = expected_details(compiled, flag, CONTEXT)
        where = (flag["key"], got)
        assert got["value"] == want["value"], where
        assert got["errorCode"] == want["errorCode"], where
        if want["errorCode"] is None:
            assert got["variant"] == want["variant"], where
            assert got["reason"] == want["reason"], where
            kinds.add(flag["kind"])
    assert kinds == {"boolean", "string", "integer", "float", "object"}
    assert answers[[f["key"] for f in flags].index("banner-text")]["value"] == "Beta"

    network = await page.network()
    [first] = bulk_requests(network, proxy.url)
    assert first["status"] == 200
    assert "if-none-match" not in first["headers"]
    etag = first["responseHeaders"]["etag"]  # readable cross-origin: CORS exposes it
    assert etag.startswith('W/"')
    assert first["headers"]["origin"] == page_server.url
    assert first["responseHeaders"]["access-control-allow-origin"] == "*"
    # Authorization and a JSON body are not "simple": Chromium asked the proxy first
    # (its preflights do not show in the page's network log, so count them at the proxy).
    requests = proxy[appkeys.METRICS].requests.values
    preflights = sum(n for (_r, method, status), n in requests.items() if method == "OPTIONS")
    assert preflights >= 1
    assert all(status == "204" for (_r, m, status) in requests if m == "OPTIONS"), requests

    # 3. The same context again: If-None-Match with the ETag, 304, nothing changes.
    await page.eval(f"window.crivlinePage.setContext({json.dumps(CONTEXT)})")
    [_, revalidated] = await answered_bulk(page, proxy.url, 2)
    assert revalidated["headers"].get("if-none-match") == etag
    assert revalidated["status"] == 304
    events = await page.eval("window.crivlinePage.events.map(e => e.type)")
    assert "changed" not in events, events
    assert "error" not in events, events
    after_304 = await page.eval(f"window.crivlinePage.evaluate({json.dumps(asked)})")
    assert after_304 == answers  # the cached evaluations stand

    # A different context with the same targeting key: If-None-Match is sent, but the
    # ETag covers the context, so the answer is a 200 with the new evaluation.
    other = {**CONTEXT, "email": "x@other.example"}
    await page.eval(f"window.crivlinePage.setContext({json.dumps(other)})")
    text = await page.wait_for(
        "(() => { const v = window.crivlinePage.evaluate("
        f"[{json.dumps(WATCH)}])[0].value; return v === 'Welcome back' && v; }})()",
        what="the evaluation for the new context",
    )
    assert text == "Welcome back"
    third = (await answered_bulk(page, proxy.url, 3))[2]
    assert third["headers"].get("if-none-match") == etag
    assert third["status"] == 200
    await page.eval(f"window.crivlinePage.setContext({json.dumps(CONTEXT)})")
    await page.wait_for(
        f"window.crivlinePage.evaluate([{json.dumps(WATCH)}])[0].value === 'Beta'",
        what="the original context's evaluation",
    )

    # 4. The bulk answer advertised an event stream; the provider has it open.
    streams = [
        r for r in await page.network() if r["url"].startswith(proxy.url + "/ofrep/v1/events")
    ]
    assert streams, "the provider did not open the advertised event stream"
    stream_url = streams[0]["url"]
    assert "ticket" in parse_qs(urlsplit(stream_url).query)
    assert shop.client_key not in stream_url  # a signed ticket, never the key
    assert streams[0]["type"] == "eventsource"

    # 5. A change through the control API reaches the page without a reload, in < 1 s.
    before = len(bulk_requests(await page.network(), proxy.url))
    t0 = time.time()
    version = await central.set_state(
        "shop",
        "banner-text",
        "prod",
        state="ENABLED",
        defaultVariant="sale",
        targeting={"if": [{"ends_with": [{"var": "email"}, "@beta.example"]}, "sale", None]},
    )
    changed = await page.wait_for(
        """window.crivlinePage.events.find(
            e => e.type === 'changed' && e.watched && e.watched.value === 'Summer sale')""",
        within=5,
        what="the change to arrive in the page",
    )
    latency = changed["at"] / 1000 - t0
    assert latency < 1.0, f"the change took {latency:.3f}s to reach the page"
    assert "banner-text" in changed["flags"]
    assert await page.eval("window.crivlinePage.loadId") == load_id  # no reload
    assert (
        await page.eval(f"window.crivlinePage.evaluate([{json.dumps(WATCH)}])[0].value")
        == "Summer sale"
    )
    # The refetch was triggered by the event: it carries the event's ETag as metadata.
    refetch = (await answered_bulk(page, proxy.url, before + 1))[before]
    query = parse_qs(urlsplit(refetch["url"]).query)
    assert query["flagConfigEtag"][0].startswith(f'"{version}-'), query
    assert refetch["status"] == 200
    assert int(refetch["responseHeaders"]["crivline-version"]) == version
    console = await page.console()
    assert not [c for c in console if c["type"] in ("error", "pageerror")], console
