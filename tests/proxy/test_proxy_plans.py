"""A tenant's plan reaches the proxy's memory the way a flag change does: written by
control with a bump of every environment of the tenant, replicated by syncd, read by
the proxy — real control, Postgres, syncd, Valkey and proxy."""

from __future__ import annotations

from support.edgekit import Central, StartProxy, eventually

from crivline.seed import set_plan
from proxy import appkeys


async def test_a_plan_change_reaches_the_proxy_within_the_bound(
    central: Central, start_proxy: StartProxy
) -> None:
    await central.ok("POST", "/projects", {"key": "shop"})
    await central.ok("POST", "/projects/shop/environments", {"key": "prod"})
    env = await central.environment_id("shop", "prod")
    await set_plan(central.db, "acme", "free")
    tenant = await central.db.fetchval("SELECT id::text FROM tenants WHERE key = 'acme'")
    proxy = await start_proxy()
    await proxy.loaded(env)
    plans = proxy[appkeys.PLANS]

    def tier() -> str | None:
        plan = plans.plan(tenant)
        return None if plan is None else plan.tier

    await eventually(lambda: tier() == "free", what="the free plan at the proxy")
    free = plans.plan(tenant)
    assert free is not None
    assert (free.evaluations_per_day, free.streams_per_environment) == (1000, 10)

    # The bound: a flag change's (reconcile interval, 0.5 s here, + 5 s) plus the
    # proxy's one-second read of the plans.
    change = await set_plan(central.db, "acme", "pro")
    assert change.changed
    await eventually(lambda: tier() == "pro", within=6.5, what="the pro plan at the proxy")
    pro = plans.plan(tenant)
    assert pro is not None
    assert pro.evaluations_per_day == 1_000_000
    assert pro.revision > free.revision

    await set_plan(central.db, "acme", "enterprise")
    await eventually(lambda: tier() == "enterprise", within=6.5, what="the uncapped plan")
    uncapped = plans.plan(tenant)
    assert uncapped is not None
    assert uncapped.evaluations_per_day is None
