"""One tenant's rules and contexts cannot stall or bloat the edge the other one shares.

Through the real pipeline (control → Postgres → syncd → Valkey → proxy), tenant globex
writes the attacks: rules that are too large once compiled are refused at write time
with their path (nothing reaches the edge); rules that are costly at run time are
served, and every evaluation of them ends within the evaluation budget — a result or a
GENERAL error naming the budget, counted in ``/metrics``. Meanwhile tenant acme polls,
evaluates and opens streams, and its slowest answer is compared with a bound.

The bounds are generous on purpose (the machine is shared and loaded): they tell "a
bounded evaluation" (milliseconds) from "the stall the budget prevents" (seconds: the
issue's squaring attack held the loop 3.5 s, and a doubling ``merge`` never ends). The
figures measured are printed for the report; README "Guarantees" states them.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import pytest
from support.edgekit import SSEClient
from world import OPTIONS, World, build_world

from crivline.flags import DEFAULT_BUDGET, DEFAULT_LIMITS

LATENCY_BOUND_SECONDS = 2.0  # acme's slowest answer while globex attacks
MEMORY_BOUND_BYTES = 256 * 1024 * 1024  # growth of the process the proxy runs in

ACC = {"var": "accumulator"}
# name -> (targeting condition, context): each costly at run time, each served.
RUN_TIME = {
    "squaring-in-reduce": (
        {"==": [{"reduce": [{"var": "a"}, {"*": [ACC, ACC]}, 3]}, 1]},
        {"a": list(range(23))},
    ),
    "merge-doubles-in-reduce": (
        {"reduce": [{"var": "a"}, {"merge": [ACC, ACC]}, [1]]},
        {"a": list(range(60))},
    ),
    "cat-doubles-in-reduce": (
        {"reduce": [{"var": "a"}, {"cat": [ACC, ACC]}, "xx"]},
        {"a": list(range(60))},
    ),
    "nested-array-operations": (
        {
            "none": [
                {"map": [{"merge": [{"var": "a"}] * 4}, {"var": "b"}]},
                {"some": [{"var": ""}, {"==": [{"var": ""}, -1]}]},
            ]
        },
        {"a": [{"b": list(range(90))}] * 100},
    ),
    "arrays-compared-as-strings": (
        {"some": [{"var": "rows"}, {"==": [{"var": ""}, "x"]}]},
        {"rows": [["y" * 20] * 300] * 30},
    ),
    "context-at-the-node-limit": (
        {"some": [{"var": "a"}, {"some": [{"var": "x"}, {"==": [{"var": ""}, -1]}]}]},
        {"a": [{"x": list(range(97))}] * 100},  # 9,902 values: just under the limit
    ),
    "long-string-scanned-per-item": (
        {"all": [{"var": "a"}, {"in": ["h", {"var": "t"}]}]},
        {"a": [{"t": "h" * 60_000}] * 3},
    ),
}


def _flag(condition: Any) -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "defaultVariant": "off",
        "targeting": {"if": [condition, "on", "off"]},
    }


async def _create(world: World, tenant: Any, key: str) -> None:
    body = {"key": key, "type": "boolean", "variants": {"on": True, "off": False}}
    await world.ok(tenant, "POST", "/projects/shop/flags", body)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def test_rules_too_large_to_compile_are_refused_at_write_time(world: World) -> None:
    globex = world.globex
    versions = await world.central.db.fetchval("SELECT sum(version) FROM environments")
    limit = DEFAULT_LIMITS.max_compiled_bytes
    await _create(world, globex, "folded")
    await world.ok(
        globex, "PUT", "/projects/shop/segments/big", {"definition": {"cat": ["x" * 100_000]}}
    )
    # the memory attack: a folded cat of a 100 KB segment, used again and again
    folded = {"in": [{"var": "a"}, {"cat": [{"$ref": "big"} for _ in range(1_000)]}]}
    status, answer, _ = await world.api(
        globex, "PUT", "/projects/shop/flags/folded/environments/dev", _flag(folded)
    )
    assert status == 422, answer
    [problem] = answer["errors"]
    assert problem["path"].startswith("targeting.if[0].in[1].cat["), problem
    assert problem["path"].endswith("].$ref"), problem
    assert f"more than {limit} bytes" in problem["message"]
    assert "inside segment 'big'" in problem["message"]

    # a deep $ref chain: each segment uses the one before twice
    await world.ok(
        globex,
        "PUT",
        "/projects/shop/segments/s0",
        {"definition": {"in": [{"var": "x"}, ["a" * 200]]}},
    )
    refused_at = None
    for i in range(1, 20):
        chain = {"or": [{"$ref": f"s{i - 1}"}, {"$ref": f"s{i - 1}"}]}
        status, answer, _ = await world.api(
            globex, "PUT", f"/projects/shop/segments/s{i}", {"definition": chain}
        )
        if status == 422:
            refused_at = i
            assert answer["errors"][0]["path"].startswith("definition"), answer
            break
        assert status in (200, 201), answer
    assert refused_at is not None
    assert refused_at >= 8  # refused once it got large, not before

    # a segment edit that would push a flag using it over the bound
    await _create(world, globex, "uses-grow")
    await world.ok(
        globex, "PUT", "/projects/shop/segments/grow", {"definition": {"in": [{"var": "a"}, "x"]}}
    )
    uses = {"or": [{"$ref": "grow"} for _ in range(12)]}
    await world.ok(globex, "PUT", "/projects/shop/flags/uses-grow/environments/prod", _flag(uses))
    status, answer, _ = await world.api(
        globex,
        "PUT",
        "/projects/shop/segments/grow",
        {"definition": {"in": [{"var": "a"}, "g" * 200_000]}},
    )
    assert status == 422, answer
    [problem] = answer["errors"]
    assert problem["path"].startswith("flags.uses-grow.environments.prod.targeting.if[0].or["), (
        problem
    )
    assert "flag 'uses-grow' in environment 'prod'" in problem["message"]

    # a huge literal list, through an import
    listed = {"in": [{"var": "a"}, [{"$ref": "big"}] * 25]}
    doc = {
        "flags": {
            "listed": {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"if": [listed, "on", "off"]},
            }
        }
    }
    status, answer, _ = await world.api(
        globex, "POST", "/projects/shop/environments/dev/import", doc
    )
    assert status == 422, answer
    assert answer["errors"][0]["path"].startswith("flags.listed.targeting.if[0].in[1]["), answer

    # the refused writes reached nothing: the edge serves "folded" as it was created
    await world.synced()
    client = {"Authorization": f"Bearer {globex.key('dev', 'client')}"}
    async with world.proxy.session.post(
        world.proxy.url + "/ofrep/v1/evaluate/flags/folded", headers=client, json={}
    ) as r:
        assert (r.status, (await r.json())["reason"]) == (200, "DISABLED")
    async with world.proxy.session.post(
        world.proxy.url + "/ofrep/v1/evaluate/flags/listed", headers=client, json={}
    ) as r:
        assert r.status == 404
    assert await world.central.db.fetchval("SELECT sum(version) FROM environments") > versions


async def _timed(coro: Any) -> float:
    started = time.perf_counter()
    await coro
    return time.perf_counter() - started


async def _acme_round(world: World, latencies: dict[str, list[float]]) -> None:
    """One poll, one evaluation, one stream opened to its first event, each timed."""
    proxy, acme = world.proxy, world.acme
    server = {"Authorization": f"Bearer {acme.key('dev', 'server')}"}
    client = {"Authorization": f"Bearer {acme.key('dev', 'client')}"}

    async def poll() -> None:
        async with proxy.session.get(proxy.url + "/sdk/v1/flags", headers=server) as r:
            assert r.status == 200
            await r.read()

    async def evaluate() -> None:
        async with proxy.session.post(
            proxy.url + "/ofrep/v1/evaluate/flags/checkout",
            headers=client,
            json={"context": {"email": "acme-dev-marker"}},
        ) as r:
            assert r.status == 200
            assert (await r.json())["value"] == "acme-dev-b-value"

    async def stream() -> None:
        response = await proxy.session.get(proxy.url + "/sdk/v1/stream", headers=server)
        sse = SSEClient(response)
        try:
            event = await sse.next_event(within=30)
            assert event.event == "put"
        finally:
            sse.close()

    latencies["poll"].append(await _timed(poll()))
    latencies["ofrep"].append(await _timed(evaluate()))
    latencies["stream"].append(await _timed(stream()))


async def _metric(world: World, name: str) -> float:
    async with world.proxy.session.get(world.proxy.url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_costly_rules_run_within_budget_while_another_tenant_is_served(
    world: World,
) -> None:
    globex, proxy = world.globex, world.proxy
    for name, (condition, _) in RUN_TIME.items():
        await _create(world, globex, name)
        await world.ok(
            globex, "PUT", f"/projects/shop/flags/{name}/environments/dev", _flag(condition)
        )
    await world.synced()
    over_budget = await _metric(world, "crivline_proxy_evaluations_over_budget_total")

    calm: dict[str, list[float]] = {"poll": [], "ofrep": [], "stream": []}
    for _ in range(5):
        await _acme_round(world, calm)

    attacker = {"Authorization": f"Bearer {globex.key('dev', 'client')}"}
    answers: dict[str, list[dict[str, Any]]] = {name: [] for name in RUN_TIME}
    stop = asyncio.Event()

    async def attack() -> None:
        while not stop.is_set():
            for name, (_, context) in RUN_TIME.items():
                async with proxy.session.post(
                    proxy.url + f"/ofrep/v1/evaluate/flags/{name}",
                    headers=attacker,
                    json={"context": context},
                ) as r:
                    assert r.status in (200, 400), (name, r.status)
                    answers[name].append(await r.json())
                async with proxy.session.post(
                    proxy.url + "/ofrep/v1/evaluate/flags",
                    headers=attacker,
                    json={"context": context},
                ) as r:
                    assert r.status in (200, 429), (name, r.status)
                    await r.read()

    rss_before = _rss()
    attackers = [asyncio.create_task(attack()) for _ in range(4)]
    under_attack: dict[str, list[float]] = {"poll": [], "ofrep": [], "stream": []}
    try:
        for _ in range(15):
            await _acme_round(world, under_attack)
    finally:
        stop.set()
        await asyncio.gather(*attackers)
    grown = _rss() - rss_before

    for name, seen in answers.items():
        assert seen, name
        for body in seen:
            if "errorCode" in body:  # an error is the budget's, said clearly
                assert body["errorCode"] == "GENERAL", (name, body)
                assert "exceeded the evaluation budget" in body["errorDetails"], (name, body)
            else:
                assert body["value"] in (True, False), (name, body)
    budget_errors = {n for n, seen in answers.items() if any("errorCode" in b for b in seen)}
    assert {"merge-doubles-in-reduce", "cat-doubles-in-reduce"} <= budget_errors
    assert "squaring-in-reduce" not in budget_errors  # doubles: Infinity, not a bignum
    assert await _metric(world, "crivline_proxy_evaluations_over_budget_total") > over_budget

    slowest = {kind: max(values) for kind, values in under_attack.items()}
    print(
        f"\nacme calm max { ({k: round(max(v) * 1000, 1) for k, v in calm.items()}) } ms; "
        f"under attack max { ({k: round(v * 1000, 1) for k, v in slowest.items()}) } ms; "
        f"process RSS grew {grown / 1e6:.1f} MB; budget {DEFAULT_BUDGET}"
    )
    for kind, seconds in slowest.items():
        assert seconds < LATENCY_BOUND_SECONDS, (kind, seconds)
    assert grown < MEMORY_BOUND_BYTES, grown


@pytest.fixture
async def capped(central: Any, start_proxy: Any) -> World:
    """Both tenants on a proxy with small per-tenant limits."""
    return await build_world(
        central,
        start_proxy,
        options=OPTIONS,
        max_streams_per_tenant=3,
        max_streams_per_environment=2,
        tenant_evaluation_share=0.02,
    )


async def test_a_tenant_at_its_caps_does_not_crowd_out_another(capped: World) -> None:
    world, proxy = capped, capped.proxy
    opened: list[SSEClient] = []

    async def open_stream(tenant: Any, env: str) -> int:
        headers = {"Authorization": f"Bearer {tenant.key(env, 'server')}"}
        response = await proxy.session.get(proxy.url + "/sdk/v1/stream", headers=headers)
        if response.status != 200:
            body = await response.json()
            assert response.headers["Retry-After"] == "5"
            assert body["errorCode"] == "RATE_LIMITED"
            response.release()
            return response.status
        client = SSEClient(response)
        opened.append(client)
        assert (await client.next_event(within=30)).event == "put"
        return 200

    try:
        globex, acme = world.globex, world.acme
        assert [await open_stream(globex, "dev") for _ in range(3)] == [200, 200, 429]
        assert await open_stream(globex, "prod") == 200
        assert await open_stream(globex, "prod") == 429  # the tenant's cap: 3
        # acme is untouched by globex being at its caps
        assert [await open_stream(acme, "dev") for _ in range(2)] == [200, 200]
        assert await open_stream(acme, "prod") == 200
        # a closed stream frees its slot
        opened[0].close()
        deadline = time.monotonic() + 10
        while await open_stream(globex, "dev") != 200:
            assert time.monotonic() < deadline, "the closed stream's slot was not freed"
            await asyncio.sleep(0.05)
    finally:
        for client in opened:
            client.close()

    # evaluation time: globex spends its share on costly rules, then waits; acme does not
    condition, context = RUN_TIME["context-at-the-node-limit"]
    await _create(world, world.globex, "costly")
    await world.ok(
        world.globex, "PUT", "/projects/shop/flags/costly/environments/dev", _flag(condition)
    )
    await world.synced()
    attacker = {"Authorization": f"Bearer {world.globex.key('dev', 'client')}"}
    statuses = []
    for _ in range(200):
        async with proxy.session.post(
            proxy.url + "/ofrep/v1/evaluate/flags/costly",
            headers=attacker,
            json={"context": context},
        ) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert "CRIVLINE_TENANT_EVALUATION_SHARE" in (await r.json())["errorDetails"]
                break
    assert statuses[-1] == 429, statuses
    acme_client = {"Authorization": f"Bearer {world.acme.key('dev', 'client')}"}
    async with proxy.session.post(
        proxy.url + "/ofrep/v1/evaluate/flags/checkout", headers=acme_client, json={"context": {}}
    ) as r:
        assert r.status == 200
