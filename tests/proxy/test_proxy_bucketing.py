"""The fractional bucketing scheme, from the control API to an OFREP answer.

An environment's scheme is stored with it (v3 for a new one unless asked otherwise),
rides in its flag set's metadata through syncd and Valkey, and the proxy evaluates by
it: two environments of one project with the same rollout bucket the same users by
their own scheme.
"""

from __future__ import annotations

from typing import Any

import cbor2
from support.edgekit import Central, StartProxy
from support.waiting import eventually

from crivline.flags.fractional import bucket_value

USERS = [f"user-{i}" for i in range(12)]


async def test_each_environment_buckets_by_its_own_scheme(
    central: Central, start_proxy: StartProxy
) -> None:
    await central.ok("POST", "/projects", {"key": "shop"})
    old = await central.ok(
        "POST", "/projects/shop/environments", {"key": "old", "fractionalBucketing": "v2"}
    )
    new = await central.ok("POST", "/projects/shop/environments", {"key": "new"})
    assert (old["fractionalBucketing"], new["fractionalBucketing"]) == ("v2", "v3")
    status, problem = await central.call(
        "POST", "/projects/shop/environments", {"key": "odd", "fractionalBucketing": "v1"}
    )
    assert status == 400
    assert problem["errors"][0]["path"] == "fractionalBucketing", problem

    variants = {f"b{i}": i for i in range(100)}
    await central.ok(
        "POST",
        "/projects/shop/flags",
        {"key": "rollout", "type": "integer", "variants": variants, "defaultVariant": "b0"},
    )
    rule = {"fractional": [[f"b{i}", 1] for i in range(100)]}
    keys: dict[str, str] = {}
    for env in ("old", "new"):
        await central.set_state(
            "shop", "rollout", env, state="ENABLED", defaultVariant="b0", targeting=rule
        )
        flag_set = await central.ok("GET", f"/projects/shop/environments/{env}/flagset")
        assert flag_set["metadata"]["fractionalBucketing"] == ("v2" if env == "old" else "v3")
        keys[env], _ = await central.create_key("shop", env, "server")

    proxy = await start_proxy()

    async def answers(env: str) -> dict[str, Any] | None:
        got = {}
        for user in USERS:
            response = await proxy.post(
                "/ofrep/v1/evaluate/flags/rollout",
                json={"context": {"targetingKey": user}},
                headers={"Authorization": f"Bearer {keys[env]}"},
            )
            if response.status != 200:
                return None
            body = await response.json()
            if body.get("reason") != "TARGETING_MATCH":
                return None
            got[user] = body["value"]
        return got

    v2 = {u: bucket_value("rollout" + u, 100) for u in USERS}
    v3 = {u: bucket_value(cbor2.dumps(["rollout", u]), 100) for u in USERS}
    assert v2 != v3
    for env, want in (("old", v2), ("new", v3)):

        async def served(env: str = env, want: dict[str, int] = want) -> bool:
            return await answers(env) == want

        await eventually(served, within=10, what=f"{env} bucketed by its scheme")
