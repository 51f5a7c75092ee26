"""The flag set's version (environments.flags_version) is what SDKs see, on a real stack.

A key created or revoked moves the environment's version (the edge needs the key) but
not its flag set's: pollers keep their ETag (304), streams are sent nothing, OFREP
streams are not told to refetch. Every edge reads the number from Postgres, so two edges
— one that applied each version, one that merged them into one write — name one flag set
the same way, and a client moving between them never sees its ETag or id go back.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import orjson
from support.edgekit import (
    EDGE,
    PREFIX,
    Central,
    Feeder,
    SSEClient,
    StartProxy,
    flag,
    make_key,
    new_env,
    running_syncd,
)

from crivline import keyspace as ks
from crivline.edge_store import EdgeStore
from proxy import appkeys

OpenStream = Callable[..., Awaitable[SSEClient]]

OTHER_EDGE = "edge-2"
OTHER_PREFIX = "t2:"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def set_up_shop(central: Central) -> tuple[str, str, str, int]:
    """A project with one flag in ``prod``; returns (environment id, server key, client
    key, the flag set's version)."""
    await central.shop()
    server, _ = await central.create_key("shop", "prod", "server")
    client, _ = await central.create_key("shop", "prod", "client")
    changed = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="off"
    )
    env = await central.environment_id("shop", "prod")
    return env, server, client, changed


async def versions(central: Central, env: str) -> tuple[int, int]:
    row = await central.db.fetchrow(
        "SELECT version, flags_version FROM environments WHERE id = $1", env
    )
    return int(row["version"]), int(row["flags_version"])


def etag_version(etag: str) -> int:
    match = re.fullmatch(r'(?:W/)?"([0-9]+)-[0-9a-f]{16}(?:-[0-9a-f]{16})?"', etag)
    assert match is not None, etag
    return int(match[1])


async def test_a_key_created_or_revoked_tells_sdks_nothing_and_the_next_change_arrives(
    central: Central, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, server, client, flags_version = await set_up_shop(central)
    assert await versions(central, env) == (flags_version, flags_version)
    proxy = await start_proxy()
    await proxy.loaded(env, flags_version)
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=bearer(server))
    put = await stream.next_event()
    assert (put.event, put.id) == ("put", str(flags_version))
    polled = await proxy.get("/sdk/v1/flags", headers=bearer(server))
    etag, body = polled.headers["ETag"], await polled.read()
    assert etag_version(etag) == flags_version
    bulk = await proxy.post(
        "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=bearer(client)
    )
    bulk_etag = bulk.headers["ETag"]
    assert etag_version(bulk_etag) == flags_version
    ofrep_url = (await bulk.json())["eventStreams"][0]["url"].removeprefix(proxy.url)
    ofrep = await open_stream(proxy, ofrep_url)

    created = await central.ok("POST", "/projects/shop/environments/prod/keys", {"kind": "server"})
    after_create = int(created["environmentVersion"])
    revoked_id = created["apiKey"]["id"]
    await central.ok("DELETE", f"/projects/shop/environments/prod/keys/{revoked_id}")
    after_revoke, still = await versions(central, env)
    assert after_revoke > after_create > flags_version  # the replication clock moves
    assert still == flags_version  # the flag set's does not
    await proxy.loaded(env, after_revoke)

    again = await proxy.get("/sdk/v1/flags", headers={**bearer(server), "If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert again.headers["Crivline-Version"] == str(after_revoke)
    fresh = await proxy.get("/sdk/v1/flags", headers=bearer(server))
    assert (fresh.headers["ETag"], await fresh.read()) == (etag, body)
    bulk_again = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        json={"context": {}},
        headers={**bearer(client), "If-None-Match": bulk_etag},
    )
    assert bulk_again.status == 304
    # A stream resumed from the id it holds gets nothing until the next change either.
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**bearer(server), "Last-Event-ID": put.id or ""}
    )

    # The next event each stream gets is the next real change, linked to what it holds:
    # had the key versions sent anything, it would have come first.
    changed = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="on"
    )
    assert await versions(central, env) == (changed, changed)
    for sdk in (stream, resumed):
        patch = await sdk.next_event()
        assert (patch.event, patch.id) == ("patch", str(changed))
        data = orjson.loads(patch.data)
        assert (data["version"], data["base"]) == (changed, flags_version)
        assert data["flags"]["checkout"]["defaultVariant"] == "on"
        assert not sdk.events
    refetch = await ofrep.next_event()
    assert (refetch.event, refetch.id) == ("message", str(changed))
    assert etag_version(orjson.loads(refetch.data)["etag"]) == changed
    newer = await proxy.get("/sdk/v1/flags", headers={**bearer(server), "If-None-Match": etag})
    assert newer.status == 200
    assert etag_version(newer.headers["ETag"]) == changed
    # The control API names both versions of the flag set it shows.
    shown = await central.session.get(
        f"{central.url}/api/v1/projects/shop/environments/prod/flagset",
        headers={"Authorization": f"Bearer {central.token}"},
    )
    assert shown.headers["Crivline-Version"] == str(changed)
    assert shown.headers["Crivline-Flags-Version"] == str(changed)


async def test_an_edge_that_merged_versions_names_the_flag_set_as_one_that_did_not(
    central: Central,
    start_proxy: StartProxy,
    open_stream: OpenStream,
    database_url: str,
    redis_url: str,
) -> None:
    env, server, _client, flags_version = await set_up_shop(central)
    one = await start_proxy()
    await one.loaded(env, flags_version)
    async with running_syncd(database_url, redis_url, edge=OTHER_EDGE, prefix=OTHER_PREFIX):
        two = await start_proxy(edge_id=OTHER_EDGE, key_prefix=OTHER_PREFIX)
        await two.loaded(env, flags_version)
    # The second edge's syncd is away: it will apply the next two versions as one.
    streams = [
        await open_stream(proxy, "/sdk/v1/stream", headers=bearer(server)) for proxy in (one, two)
    ]
    for stream in streams:
        assert (await stream.next_event()).id == str(flags_version)

    changed = await central.set_state(
        "shop", "checkout", "prod", state="ENABLED", defaultVariant="on"
    )
    created = await central.ok("POST", "/projects/shop/environments/prod/keys", {"kind": "client"})
    last = int(created["environmentVersion"])
    await one.loaded(env, last)  # one applied each version
    assert (await two.get("/sdk/v1/flags", headers=bearer(server))).headers[
        "Crivline-Version"
    ] == str(flags_version)
    async with running_syncd(database_url, redis_url, edge=OTHER_EDGE, prefix=OTHER_PREFIX):
        await two.loaded(env, last)  # two applied both in one write
    deltas = await central.daemon.store.redis.xrange(
        ks.Keyspace(OTHER_PREFIX, OTHER_EDGE).deltas(env)
    )
    spans = [(int(f[b"base"]), int(f[b"v"]), int(f[b"fv"])) for _id, f in deltas]
    assert spans[-1] == (flags_version, last, changed)  # one entry over both versions

    answers = [await proxy.get("/sdk/v1/flags", headers=bearer(server)) for proxy in (one, two)]
    etags = [a.headers["ETag"] for a in answers]
    assert etags[0] == etags[1]
    assert etag_version(etags[0]) == changed
    assert [a.headers["Crivline-Version"] for a in answers] == [str(last)] * 2
    for stream in streams:  # both streams: one patch, the same id, from where they were
        patch = await stream.next_event()
        assert (patch.event, patch.id) == ("patch", str(changed))
        assert orjson.loads(patch.data)["base"] == flags_version
    # A client moving between the edges holds what either serves: 304, no new id.
    for proxy in (two, one):
        moved = await proxy.get(
            "/sdk/v1/flags", headers={**bearer(server), "If-None-Match": etags[0]}
        )
        assert moved.status == 304
        assert moved.headers["ETag"] == etags[0]
    puts = [
        await open_stream(proxy, "/sdk/v1/stream", headers=bearer(server)) for proxy in (one, two)
    ]
    assert [(await p.next_event()).id for p in puts] == [str(changed)] * 2


async def test_an_edge_written_before_the_flag_set_version_keeps_its_etag_through_key_changes(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream, redis_url: str
) -> None:
    """The upgrade: an older syncd wrote the edge (no flags_version in the hash, no fv in
    the log) and the migration set flags_version = version. The key versions that follow
    keep the ETag pollers hold; the next flag change moves it forward."""
    env, key = new_env(), make_key("server")
    before = await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.redis.hdel(feeder.keyspace.environment(env), ks.F_FLAGS_VERSION)
    proxy = await start_proxy()
    await proxy.loaded(env, before)
    polled = await proxy.get("/sdk/v1/flags", headers=key.headers)
    etag = polled.headers["ETag"]
    assert etag_version(etag) == before  # the version, as the older release named it
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert (await stream.next_event()).id == str(before)

    other = make_key("server")
    added = await feeder.write(env, keys=[other], keys_only=True)
    await proxy.loaded(env, added)
    kept = await proxy.get("/sdk/v1/flags", headers={**key.headers, "If-None-Match": etag})
    assert kept.status == 304
    assert kept.headers["ETag"] == etag

    changed = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    patch = await stream.next_event()
    assert (patch.event, patch.id) == ("patch", str(changed))
    assert orjson.loads(patch.data)["base"] == before
    moved = await proxy.get("/sdk/v1/flags", headers={**key.headers, "If-None-Match": etag})
    assert moved.status == 200
    assert etag_version(moved.headers["ETag"]) == changed > before


async def test_a_stream_resumes_from_a_flag_set_version_through_the_delta_log(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    """A resume whose id is not in this process's memory reads the delta log by the flag
    set's version: key-only entries send nothing, the flag changes after it are sent."""
    env, key = new_env(), make_key("server")
    first = await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.write(env, keys=[make_key("client")], keys_only=True)
    changed = await feeder.write(env, {"a": flag({"on": True, "off": False}, "off")})
    last = await feeder.write(env, keys=[make_key("client")], keys_only=True)
    proxy = await start_proxy()  # a first load: its memory holds no patches
    await proxy.loaded(env, last)
    assert proxy[appkeys.CACHE].get(env).ring == ()
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": str(first)}
    )
    patch = await resumed.next_event()
    assert (patch.event, patch.id) == ("patch", str(changed))
    assert orjson.loads(patch.data)["base"] == first
    current = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": str(changed)}
    )
    # Nothing for it: the next event is the next change.
    following = await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")})
    for stream in (resumed, current):
        nxt = await stream.next_event()
        assert (nxt.event, nxt.id) == ("patch", str(following))
        assert orjson.loads(nxt.data)["base"] == changed


async def test_a_resume_from_a_version_this_edge_merged_away_is_a_patch_from_the_log(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    """Central versions 2 (a flag change) and 3 (a key) reached this edge as one write
    (1 -> 3, flag set version 2); a client that got 2 on another edge resumes here after
    version 4 with a patch from 2, not a whole flag set."""
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    off = {"a": flag({"on": True, "off": False}, "off")}
    await feeder.write(env, off, keys=[make_key("client")], version=3, flags_version=2)
    changed = await feeder.write(env, {**off, "b": flag({"x": 1}, "x")})
    proxy = await start_proxy()
    await proxy.loaded(env, changed)
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "2"}
    )
    patch = await resumed.next_event()
    assert (patch.event, patch.id) == ("patch", str(changed))
    data = orjson.loads(patch.data)
    assert data["base"] == 2
    assert set(data["flags"]) == {"b"}


async def test_a_ticket_names_the_flag_set_so_an_edge_without_the_key_versions_does_not_wait(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    """A browser's stream ticket from an edge that applied a key version (3, flag set 2)
    opens at once on an edge that has only version 2: the flag set is the same, so no
    refetch and no wait; the next flag change is its first event."""
    other_keys = ks.Keyspace(OTHER_PREFIX, OTHER_EDGE)
    other = Feeder(feeder.redis, other_keys, EdgeStore(feeder.redis, other_keys))
    env, key = new_env(), make_key("client")
    flags = {"a": flag({"on": True, "off": False}, "on")}
    for edge in (feeder, other):
        await edge.write(env, flags, keys=[key])
        await edge.write(env, {**flags, "b": flag({"x": 1}, "x")})
    await feeder.write(env, keys=[make_key("server")], keys_only=True)
    secret = "one-ticket-secret-for-both-edges"  # a browser's ticket is good on either
    ahead = await start_proxy(edge_id=EDGE, key_prefix=PREFIX, ticket_secret=secret)
    behind = await start_proxy(edge_id=OTHER_EDGE, key_prefix=OTHER_PREFIX, ticket_secret=secret)
    await ahead.loaded(env, 3)
    await behind.loaded(env, 2)
    bulk = await ahead.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=key.headers)
    assert etag_version(bulk.headers["ETag"]) == 2
    url = (await bulk.json())["eventStreams"][0]["url"].removeprefix(ahead.url)
    stream = await open_stream(behind, url)
    assert "Crivline-Resume" not in stream.response.headers  # neither behind nor elsewhere
    waited = behind[appkeys.METRICS].registry.get_sample_value(
        "crivline_proxy_client_ahead_total", {"outcome": "reached"}
    )
    assert not waited
    changed = await other.write(env, {**flags, "b": flag({"x": 2}, "x")})
    refetch = await stream.next_event()
    assert (refetch.event, refetch.id) == ("message", str(changed))
