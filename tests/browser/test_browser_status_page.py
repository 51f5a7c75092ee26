"""The edge status page in headless Chromium: sign in, figures equal to ``/metrics``,
live updates without a reload, no secrets, nothing loaded from elsewhere, and a
screenshot in ``tests/browser/output/<test>/status.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from browserkit import Page, Shop, open_shop
from prometheus_client.parser import text_string_to_metric_families
from support.edgekit import Central, SSEClient, StartProxy

NewPage = Callable[[str], Awaitable[Page]]
OpenStream = Callable[..., Awaitable[SSEClient]]

TOKEN = "operator-token-for-the-browser-test"
OPERATOR_ROUTES = {"healthz", "readyz", "metrics", "status", "status_data", "status_sign_in"}


async def scrape(shop: Shop) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    text = await (await shop.proxy.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def traffic(metrics: dict[Any, float]) -> dict[str, list[float]]:
    """Client requests per route from /metrics: [total, 4xx, 5xx]."""
    out: dict[str, list[float]] = {}
    for (name, labels), count in metrics.items():
        if name != "crivline_proxy_requests_total":
            continue
        label = dict(labels)
        if label["route"] in OPERATOR_ROUTES:
            continue
        row = out.setdefault(label["route"], [0.0, 0.0, 0.0])
        row[0] += count
        row[1] += count if label["status"].startswith("4") else 0
        row[2] += count if label["status"].startswith("5") else 0
    return out


async def figure(page: Page, name: str) -> Any:
    raw = await page.eval(
        f"document.querySelector('[data-figure=\"{name}\"]').getAttribute('data-value')"
    )
    return json.loads(raw) if raw not in (None, "") else None


async def refreshed_after(page: Page, moment: float) -> None:
    """Wait until the page shows data generated after ``moment`` (epoch seconds)."""
    await page.wait_for(
        f"Number(document.body.dataset.generatedAt || 0) > {moment}",
        what="the page to refresh itself",
    )


async def client_traffic(shop: Shop, open_stream: OpenStream) -> list[SSEClient]:
    """A little of everything: OFREP bulk and single (200, 404), a refused key, streams."""
    proxy, client = shop.proxy, {"Authorization": f"Bearer {shop.client_key}"}
    for targeting_key in ("u1", "u2", "u3"):
        body = {"context": {"targetingKey": targeting_key}}
        assert (await proxy.post("/ofrep/v1/evaluate/flags", json=body, headers=client)).ok
    single = await proxy.post("/ofrep/v1/evaluate/flags/theme", json={}, headers=client)
    assert single.status == 200
    missing = await proxy.post("/ofrep/v1/evaluate/flags/nope", json={}, headers=client)
    assert missing.status == 404
    refused = await proxy.get("/sdk/v1/flags", headers={"X-API-Key": "crv_srv_not-a-key"})
    assert refused.status == 401
    server = {"Authorization": f"Bearer {shop.server_key}"}
    sdk = await open_stream(proxy, "/sdk/v1/stream", headers=server)
    await sdk.next_event()
    ofrep = await open_stream(proxy, "/ofrep/v1/events", headers=client)
    return [sdk, ofrep]


async def test_status_page_shows_the_edge_live_and_matches_the_metrics(
    central: Central,
    start_proxy: StartProxy,
    open_stream: OpenStream,
    new_page: NewPage,
    output: Path,
) -> None:
    shop = await open_shop(central, start_proxy, operator_token=TOKEN)
    proxy = shop.proxy
    page = await new_page("status")

    # Without the token: a sign-in form (401), no figures. JSON clients get a JSON 401.
    assert await page.goto(proxy.url + "/status") == 401
    assert await page.eval("document.querySelectorAll('[data-figure]').length") == 0
    anonymous = await proxy.get("/status/data")
    assert anonymous.status == 401
    await page.fill("#token", "wrong-token")
    await page.click("button[type=submit]")
    await page.wait_for(
        "document.querySelector('.error').textContent.includes('not the operator token')",
        what="the refusal",
    )
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for("document.body.dataset.refreshes >= 1", what="the page's first data")
    await page.eval("window.sameDocument = true")

    # Traffic, then two changes through the control API (the propagation chart).
    streams = await client_traffic(shop, open_stream)
    baseline = await scrape(shop)
    lag_count_before = value(baseline, "crivline_proxy_propagation_lag_seconds_count")
    lag_sum_before = value(baseline, "crivline_proxy_propagation_lag_seconds_sum")
    versions = []
    for variant in ("sale", "welcome"):
        versions.append(
            await central.set_state(
                "shop", "banner-text", "prod", state="ENABLED", defaultVariant=variant
            )
        )
        await proxy.loaded(shop.environment, versions[-1])
        await page.wait_for(
            f"document.querySelector('#lag-chart rect[data-version=\"{versions[-1]}\"]')",
            what=f"version {versions[-1]} in the propagation chart",
        )
    for stream in streams[1:]:
        await stream.next_event()  # the OFREP stream's refetchEvaluation

    # The figures equal /metrics (no client traffic now; operator routes are not counted).
    settled = time.time()
    await refreshed_after(page, settled)
    metrics = await scrape(shop)
    assert await figure(page, "environments") == value(
        metrics, "crivline_proxy_environments_loaded"
    )
    for kind in ("sdk", "ofrep"):
        assert await figure(page, f"streams-{kind}") == 1
        assert value(metrics, "crivline_proxy_streams_open", kind=kind) == 1
    assert await figure(page, "streams") == 2
    per_route = traffic(metrics)
    assert await figure(page, "requests") == sum(r[0] for r in per_route.values())
    assert await figure(page, "client-errors") == sum(r[1] for r in per_route.values()) == 2
    assert await figure(page, "server-errors") == sum(r[2] for r in per_route.values())
    rows = await page.eval(
        """[...document.querySelectorAll('#routes tbody tr')].map(tr =>
            [...tr.children].map(td => td.dataset.key || Number(td.dataset.value)))"""
    )
    assert {row[0]: row[1:] for row in rows} == per_route
    assert await figure(page, "rps") > 0
    assert await figure(page, "eps") > 0
    lag_count = value(metrics, "crivline_proxy_propagation_lag_seconds_count")
    lag_sum = value(metrics, "crivline_proxy_propagation_lag_seconds_sum")
    assert lag_count - lag_count_before == len(versions)
    assert await figure(page, "propagation-count") == lag_count
    assert abs(await figure(page, "propagation-mean") - lag_sum / lag_count) < 1e-3
    bars = await page.eval(
        """Object.fromEntries([...document.querySelectorAll('#lag-chart rect')].map(
            r => [r.dataset.version, Number(r.dataset.seconds)]))"""
    )
    ours = [bars[str(v)] for v in versions]  # one bar per change, labelled by version
    # The same changes, measured by the same clock, as the histogram saw them.
    assert abs(sum(ours) - (lag_sum - lag_sum_before)) < 0.05
    age = await figure(page, "snapshot-age")
    assert abs(age - value(metrics, "crivline_proxy_snapshot_age_seconds")) < 2.0
    assert await figure(page, "reconciled") > 0
    state = await page.eval("document.querySelector('[data-figure=state]').textContent")
    assert state == "ready"

    env_row = await page.eval(
        f"""[...document.querySelector('#environments tbody td[data-key="{shop.environment}"]')
            .parentElement.children].map(td => td.dataset.value ?? td.textContent)"""
    )
    assert env_row[0] == shop.environment
    assert env_row[1] == "shop/prod"
    assert int(env_row[2]) == versions[-1]
    assert int(env_row[3]) == 7  # flags in the shop
    assert [int(env_row[6]), int(env_row[7])] == [1, 1]

    # Live: another change shows up without a reload.
    versions.append(
        await central.set_state("shop", "max-items", "prod", state="ENABLED", defaultVariant="many")
    )
    await page.wait_for(
        f"""document.querySelector('#environments td[data-key="{shop.environment}"]')
            .parentElement.children[2].dataset.value === '{versions[-1]}'""",
        what="the new version on the page",
    )
    await page.wait_for(
        f"document.querySelector('#lag-chart rect[data-version=\"{versions[-1]}\"]')",
        what="the last change in the chart",
    )
    assert await page.eval("window.sameDocument") is True
    await page.screenshot(output / "status.png")

    # No secrets in what the page got, and nothing fetched from anywhere else.
    html = await page.eval("document.documentElement.outerHTML")
    cookie_session = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=cookie_session) as session:
        await session.post(proxy.url + "/status", data={"token": TOKEN})
        data = await (await session.get(proxy.url + "/status/data")).text()
        assert json.loads(data)["environments"][0]["version"] == versions[-1]
    for secret in (TOKEN, shop.client_key, shop.server_key, "ticket"):
        assert secret not in html
        assert secret not in data
    network = await page.network()
    assert network
    assert all(r["url"].startswith(proxy.url + "/status") for r in network), [
        r["url"] for r in network
    ]
    assert all(r["headers"].get("cookie", "").count(TOKEN) == 0 for r in network)
    console = await page.console()
    signed_out = "the server responded with a status of 401"  # the sign-in form's status
    problems = [
        c for c in console if c["type"] in ("error", "pageerror") and signed_out not in c["text"]
    ]
    assert not problems, problems  # a CSP violation would show here

    # Signing out ends the session: the next refresh finds the sign-in form again.
    await page.click("header button[name=logout]")
    await page.wait_for("document.querySelector('#token') !== null", what="the sign-in form")
    assert await page.eval("fetch('status/data').then(r => r.status)") == 401
