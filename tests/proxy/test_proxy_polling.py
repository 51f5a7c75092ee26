"""GET /sdk/v1/flags through a real proxy on real Valkey: bytes, ETag/304, auth, errors."""

from __future__ import annotations

import orjson
from support.edgekit import Feeder, StartProxy, flag, make_key, new_env

from crivline import keyspace as ks


async def test_flag_set_is_served_exactly_as_stored_with_etag_and_304(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("server")
    version = await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy()
    stored = await feeder.redis.hget(feeder.keyspace.environment(env), ks.F_FLAGSET)

    response = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert response.status == 200
    assert await response.read() == stored
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Crivline-Version"] == str(version)
    etag = response.headers["ETag"]
    assert etag.startswith(f'"{version}-')
    assert etag.endswith('"')
    assert "Crivline-Stale" not in response.headers

    again = await proxy.get("/sdk/v1/flags", headers={**key.headers, "If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Crivline-Version"] == str(version)

    # X-API-Key works the same way; a list of candidates and weak forms match too.
    listed = await proxy.get(
        "/sdk/v1/flags", headers={"X-API-Key": key.secret, "If-None-Match": f'"x", W/{etag}'}
    )
    assert listed.status == 304


async def test_a_change_gives_a_new_etag_and_the_old_one_no_longer_matches(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    proxy = await start_proxy()
    first = await proxy.get("/sdk/v1/flags", headers=key.headers)
    etag = first.headers["ETag"]

    version = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    await proxy.loaded(env, version)
    second = await proxy.get("/sdk/v1/flags", headers={**key.headers, "If-None-Match": etag})
    assert second.status == 200
    assert second.headers["ETag"] != etag
    body = orjson.loads(await second.read())
    assert body["flags"]["a"]["defaultVariant"] == "off"


async def test_auth_errors_are_json_with_the_right_status(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, server, client = new_env(), make_key("server"), make_key("client")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[server, client])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()

    missing = await proxy.get("/sdk/v1/flags")
    assert missing.status == 401
    assert missing.headers["Content-Type"] == "application/json"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    body = await missing.json()
    assert body["errorCode"] == "UNAUTHORIZED"
    assert "Authorization: Bearer" in body["errorDetails"]

    unknown = await proxy.get("/sdk/v1/flags", headers=make_key("server").headers)
    assert unknown.status == 401
    assert (await unknown.json())["errorDetails"] == "unknown or revoked API key"

    malformed = await proxy.get("/sdk/v1/flags", headers={"Authorization": "Bearer nope"})
    assert malformed.status == 401

    forbidden = await proxy.get("/sdk/v1/flags", headers=client.headers)
    assert forbidden.status == 403
    assert (await forbidden.json())["errorCode"] == "FORBIDDEN"

    nowhere = await proxy.get("/no/such/path", headers=server.headers)
    assert nowhere.status == 404
    assert (await nowhere.json())["errorCode"] == "NOT_FOUND"

    wrong_method = await proxy.post("/sdk/v1/flags", headers=server.headers)
    assert wrong_method.status == 405
    assert wrong_method.headers["Content-Type"] == "application/json"


async def test_unknown_keys_are_negatively_cached(feeder: Feeder, start_proxy: StartProxy) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    stranger = make_key("server")
    before = await feeder.redis.info("commandstats")
    for _ in range(20):
        response = await proxy.get("/sdk/v1/flags", headers=stranger.headers)
        assert response.status == 401
    after = await feeder.redis.info("commandstats")
    # A key lookup is one round trip that always asks HEXISTS of the sync state (nothing
    # else sends it; HGETALL is also the plans' and the usage counters' periodic read).
    lookups = after.get("cmdstat_hexists", {}).get("calls", 0) - before.get(
        "cmdstat_hexists", {}
    ).get("calls", 0)
    assert lookups <= 1  # one lookup, then the negative cache answers


async def test_a_key_created_after_start_works_once_announced(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, first = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[first])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    late = make_key("server")
    refused = await proxy.get("/sdk/v1/flags", headers=late.headers)
    assert refused.status == 401  # now negatively cached
    version = await feeder.write(env, keys=[late])
    await proxy.loaded(env, version)
    accepted = await proxy.get("/sdk/v1/flags", headers=late.headers)
    assert accepted.status == 200
