"""The daily quota across three edges, measured: how far past the plan's limit a tenant
is served when every edge decides from memory, against the bound the README states.

Real processes (:func:`fault_cluster.build`, ``plain``): Postgres, control, and three
edges of one Valkey, one syncd and one proxy each; every syncd reports usage to control
every :data:`USAGE_FLUSH` seconds. One tenant on the free plan. One client per edge
sends evaluation requests (polls answered 200 and 304, OFREP single and bulk) at a
paced :data:`RATE` per second, all three at once, until every edge has answered 429.

An edge sees its own process's admissions at once, the other edges' only after their
proxy flushed them (1 s), their syncd reported them, its own syncd learnt the new total
and its proxy read it. The README bounds the overshoot by (proxy processes × 1 s +
edges × ``CRIVLINE_USAGE_FLUSH_INTERVAL``) × the tenant's request rate; the test
computes that from the request rate measured per edge and asserts the measured
overshoot (served − limit) stays within it. Then: every edge refuses polls, OFREP and
new streams with the quota's 429, and once the proxies stopped (their last flush) and
every syncd delivered what its edge held, control's usage equals exactly what the
clients were served.

Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from fault_cluster import Cluster, Edge, build, wait_until

from crivline.keyspace import Keyspace
from crivline.plans import day_end, seconds_to_reset, utc_day
from crivline.settings import Settings
from proxy.options import ProxyOptions
from proxy.quota import QUOTA_PROBLEM

RATE = 40.0  # evaluation requests per second each client sends to its edge
USAGE_FLUSH = 0.25  # CRIVLINE_USAGE_FLUSH_INTERVAL of every syncd
PROXY_FLUSH = ProxyOptions().usage_flush_seconds  # each proxy's flush and read (1 s)
SERVED = frozenset({200, 304})


@dataclass
class Tally:
    """What one client sent to one edge and what it was answered."""

    edge: str
    statuses: Counter[int] = field(default_factory=Counter)
    started: float = 0.0
    first_refusal: float | None = None  # monotonic time of the edge's first 429

    @property
    def served(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in SERVED)

    @property
    def rate(self) -> float:
        """Evaluations served per second while the edge still admitted them."""
        assert self.first_refusal is not None
        return self.served / (self.first_refusal - self.started)


async def _hammer(
    session: aiohttp.ClientSession,
    edge: Edge,
    key: str,
    tally: Tally,
    refused: asyncio.Event,
    everyone_refused: asyncio.Event,
) -> None:
    """Send one evaluation request every 1/RATE s (a mix of the four kinds) until every
    edge has refused one."""
    url, auth = edge.proxies[0].url, {"Authorization": f"Bearer {key}"}
    etag: str | None = None
    tally.started = time.monotonic()
    sent = 0
    while not everyone_refused.is_set():
        shape = sent % 4
        if shape == 0 or (shape == 1 and etag is None):
            request = session.get(f"{url}/sdk/v1/flags", headers=auth)
        elif shape == 1:
            request = session.get(f"{url}/sdk/v1/flags", headers={**auth, "If-None-Match": etag})
        elif shape == 2:
            body = {"context": {"targetingKey": f"user-{sent}"}}
            request = session.post(f"{url}/ofrep/v1/evaluate/flags/f0", headers=auth, json=body)
        else:
            request = session.post(f"{url}/ofrep/v1/evaluate/flags", headers=auth, json={})
        async with request as response:
            await response.read()
            status = response.status
            if status == 200 and shape == 0:
                etag = response.headers["ETag"]
        assert status in (*SERVED, 429), f"edge {edge.name} answered {status}"
        tally.statuses[status] += 1
        if status == 429 and tally.first_refusal is None:
            tally.first_refusal = time.monotonic()
            refused.set()
        sent += 1
        # Paced, not a wait for a condition: the next request leaves on its tick.
        await asyncio.sleep(max(0.0, tally.started + sent / RATE - time.monotonic()))


async def _refuses(session: aiohttp.ClientSession, edge: Edge, key: str, limit: int) -> None:
    """The edge answers the quota's 429 to a poll (problem+json), an OFREP evaluation
    (OFREP's error shape) and a new stream, each with Retry-After to the next UTC
    midnight."""
    url, auth = edge.proxies[0].url, {"Authorization": f"Bearer {key}"}
    before = datetime.now(UTC)
    async with session.get(f"{url}/sdk/v1/flags", headers=auth) as r:
        assert r.status == 429, (edge.name, r.status)
        assert r.content_type == "application/problem+json"
        problem = orjson.loads(await r.read())
        retry_after = int(r.headers["Retry-After"])
    after = datetime.now(UTC)
    assert seconds_to_reset(after) <= retry_after <= seconds_to_reset(before), edge.name
    midnight = day_end(utc_day(before))
    assert problem["type"] == QUOTA_PROBLEM
    assert (problem["status"], problem["plan"], problem["limit"]) == (429, "free", limit)
    assert datetime.fromisoformat(problem["resetsAt"]) == midnight

    async with session.post(
        f"{url}/ofrep/v1/evaluate/flags/f0", headers=auth, json={"context": {}}
    ) as r:
        assert r.status == 429, (edge.name, r.status)
        assert int(r.headers["Retry-After"]) <= seconds_to_reset(before)
        assert orjson.loads(await r.read())["errorCode"] == "QUOTA_EXCEEDED"

    async with session.get(f"{url}/sdk/v1/stream", headers=auth) as r:
        assert r.status == 429, (edge.name, r.status)
        assert r.content_type == "application/problem+json"
        assert int(r.headers["Retry-After"]) <= seconds_to_reset(before)
        assert orjson.loads(await r.read())["type"] == QUOTA_PROBLEM


async def _delivered(edge: Edge) -> bool:
    """Nothing of the edge's usage is left to hand to control: no counts, no staged
    batch, no evaluations pending."""
    keyspace = Keyspace(Settings.from_env({}).key_prefix, f"edge-{edge.name}")
    redis = aioredis.from_url(edge.redis_url)
    try:
        left = await redis.exists(keyspace.usage, keyspace.usage_batch)
        pending = await redis.hlen(keyspace.usage_pending)
    finally:
        await redis.aclose()
    return left == 0 and pending == 0


@pytest.fixture
async def edges(work_dir: Path) -> Any:
    if any(os.environ.get(v) for v in ("CRIVLINE_TEST_DATABASE_URL", "CRIVLINE_TEST_REDIS_URL")):
        pytest.skip("this test starts its own servers")
    if seconds_to_reset(datetime.now(UTC)) < 120:
        pytest.skip("too close to the end of the UTC day, when the quota resets")
    built = await build(
        work_dir / "quota-edges", plain=True, tenants={"acme": "free"}, usage_flush=USAGE_FLUSH
    )
    try:
        yield built
    finally:
        await built.close()


@pytest.mark.timeout(90)
async def test_three_edges_overshoot_the_daily_quota_within_the_stated_bound(
    edges: Cluster,
) -> None:
    cluster = edges
    tenant = cluster.tenants[0]
    plan = await cluster.api_ok(tenant, "GET", "/plan")
    limit = plan["limits"]["evaluationsPerDay"]
    assert (plan["tier"], plan["today"]["evaluations"]) == ("free", 0)
    key = tenant.stream_keys[tenant.environments["prod"]]

    tallies = [Tally(edge.name) for edge in cluster.edges]
    refused = [asyncio.Event() for _ in cluster.edges]
    everyone_refused = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        clients = [
            asyncio.create_task(_hammer(session, edge, key, tally, stop, everyone_refused))
            for edge, tally, stop in zip(cluster.edges, tallies, refused, strict=True)
        ]
        try:
            await wait_until(
                lambda: all(e.is_set() for e in refused) or any(c.done() for c in clients),
                within=60,
                what="every edge to answer 429",
            )
        finally:
            everyone_refused.set()
            await asyncio.gather(*clients)
        for edge in cluster.edges:
            await _refuses(session, edge, key, limit)

    # The proxies' last flush (a graceful stop), then every syncd's last delivery.
    await asyncio.gather(*(edge.proxies[0].stop() for edge in cluster.edges))
    await wait_until(
        lambda: _all(_delivered(edge) for edge in cluster.edges),
        within=15,
        what="every edge's usage delivered to control",
    )
    today = (await cluster.api_ok(tenant, "GET", "/plan"))["today"]

    served = sum(t.served for t in tallies)
    rates = [t.rate for t in tallies]
    processes = sum(len(edge.proxies) for edge in cluster.edges)
    lag = processes * PROXY_FLUSH + len(cluster.edges) * USAGE_FLUSH
    bound = lag * sum(rates)
    overshoot = served - limit
    print(
        f"\nquota across {len(cluster.edges)} edges: limit {limit}, served {served}"
        f" ({', '.join(f'{t.edge} {t.served} at {t.rate:.1f}/s' for t in tallies)}),"
        f" overshoot {overshoot}; bound ({processes} × {PROXY_FLUSH:g} s +"
        f" {len(cluster.edges)} × {USAGE_FLUSH:g} s) × {sum(rates):.1f}/s = {bound:.0f};"
        f" central usage {today['evaluations']}"
    )
    # The measurement can fail: edges that never learnt of each other would each serve
    # the whole limit, an overshoot far past the bound.
    assert bound < (len(cluster.edges) - 1) * limit
    assert 0 <= overshoot <= bound, (overshoot, bound, tallies)
    # Metering is exact: control counts what was served, refusals and nothing else.
    assert today["evaluations"] == served, (today, tallies)
    assert today["streams"] == 0


async def _all(checks: Any) -> bool:
    return all(await asyncio.gather(*checks))
