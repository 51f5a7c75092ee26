"""SSE streams through a real proxy on real Valkey: exact bytes, order, resume, revocation."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from support.edgekit import (
    TEST_OPTIONS,
    Feeder,
    RunningProxy,
    SSEClient,
    StartProxy,
    flag,
    make_key,
    new_env,
)
from support.waiting import eventually

from crivline import keyspace as ks
from proxy import appkeys
from proxy.edgestreams import KEY_STREAMS

OpenStream = Callable[..., Awaitable[SSEClient]]

ON = flag({"on": True, "off": False}, "on")
OFF = flag({"on": True, "off": False}, "off")


async def stored_flag_set(feeder: Feeder, env: str) -> bytes:
    raw = await feeder.redis.hget(feeder.keyspace.environment(env), ks.F_FLAGSET)
    assert isinstance(raw, bytes)
    return raw


async def test_stream_opens_with_retry_and_put_then_patches_exact_bytes(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON, "b": ON}, keys=[key])
    proxy = await start_proxy()
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert stream.response.status == 200
    assert stream.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert stream.response.headers["Cache-Control"] == "no-cache, no-transform"
    assert stream.response.headers["Crivline-Version"] == "1"

    put = b"id: 1\nevent: put\ndata: " + await stored_flag_set(feeder, env) + b"\n\n"
    opening = b"retry: 2000\n\n" + put
    assert await stream.raw_until(len(opening)) == opening

    await feeder.write(env, {"a": OFF}, committed_at=1771622898.25)  # a changed, b removed
    patch = (
        b"id: 2\nevent: patch\ndata: "
        b'{"version":2,"base":1,"committedAt":1771622898.25,"evaluators":{},'
        b'"flags":{"a":{"defaultVariant":"off",'
        b'"state":"ENABLED","variants":{"off":false,"on":true}}},"removed":["b"],'
        b'"removedEvaluators":[]}\n\n'
    )
    assert await stream.raw_until(len(opening) + len(patch)) == opening + patch


async def test_versions_arrive_in_order_without_duplicates(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert (await stream.next_event()).event == "put"
    for i in range(2, 12):
        await feeder.write(env, {"a": ON if i % 2 else OFF, f"f{i}": ON})
    ids = []
    while len(ids) < 10:
        event = await stream.next_event()
        assert event.event == "patch"
        assert event.id is not None
        ids.append(int(event.id))
        assert orjson.loads(event.data)["version"] == int(event.id)
    assert ids == list(range(2, 12))


async def test_resume_after_three_missed_changes_gets_exactly_those_three(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    first = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert (await first.next_event()).id == "1"
    first.close()
    for i in range(3):
        version = await feeder.write(env, {"a": ON, f"new{i}": ON})
    await proxy.loaded(env, version)

    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "1"}
    )
    events = [await resumed.next_event() for _ in range(3)]
    assert [(e.event, e.id) for e in events] == [("patch", "2"), ("patch", "3"), ("patch", "4")]
    assert [orjson.loads(e.data)["base"] for e in events] == [1, 2, 3]
    assert list(orjson.loads(events[2].data)["flags"]) == ["new2"]
    # Nothing else follows: the next thing is the next change.
    await feeder.write(env, {"a": OFF})
    nxt = await resumed.next_event()
    assert (nxt.event, nxt.id) == ("patch", "5")
    assert not resumed.events


async def test_resume_from_the_delta_log_when_this_process_never_saw_the_changes(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    for i in range(3):
        await feeder.write(env, {"a": ON, f"new{i}": ON}, committed_at=1771622900.5 + i)
    proxy = await start_proxy()  # loads version 4: its in-memory ring is empty
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "1"}
    )
    events = [await resumed.next_event() for _ in range(3)]
    assert [(e.event, e.id) for e in events] == [("patch", "2"), ("patch", "3"), ("patch", "4")]
    # Each patch carries the commit time of its change, read from the delta log.
    assert [orjson.loads(e.data)["committedAt"] for e in events] == [
        1771622900.5,
        1771622901.5,
        1771622902.5,
    ]


async def test_resume_beyond_the_log_gets_a_put(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    for i in range(4):
        await feeder.write(env, {"a": ON, f"new{i}": ON})
    await feeder.redis.xtrim(feeder.keyspace.deltas(env), maxlen=1, approximate=False)
    proxy = await start_proxy()
    resumed = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "2"}
    )
    event = await resumed.next_event()
    assert (event.event, event.id) == ("put", "5")
    assert orjson.loads(event.data) == orjson.loads(await stored_flag_set(feeder, env))


async def test_resume_when_current_or_ahead_sends_nothing_until_newer(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    current = await open_stream(
        proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "1"}
    )
    # Ahead of this proxy: it waits (bounded) for version 2 before sending anything.
    opening = asyncio.ensure_future(
        open_stream(proxy, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "2"})
    )
    await feeder.write(env, {"a": OFF})  # version 2
    ahead = await opening
    await feeder.write(env, {"a": ON})  # version 3
    assert [(await current.next_event()).id for _ in range(2)] == ["2", "3"]
    only = await ahead.next_event()
    assert (only.event, only.id) == ("patch", "3")  # never 2 again
    assert orjson.loads(only.data)["base"] == 2
    assert current.raw.startswith(b"retry: 2000\n\nid: 2\nevent: patch\n")


async def test_keepalive_comments_on_idle_streams(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy(TEST_OPTIONS.with_(keepalive_seconds=0.05))
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await stream.next_event()
    await eventually(
        lambda: stream.raw.count(b": keep-alive\n\n") >= 2 or stream._read(1.0),
        what="two keep-alive comments",
    )
    assert stream.parser.comments[:2] == ["keep-alive", "keep-alive"]


async def test_revoked_key_stream_is_closed_within_a_second(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, doomed, other = new_env(), make_key("server"), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[doomed, other])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=doomed.headers)
    survivor = await open_stream(proxy, "/sdk/v1/stream", headers=other.headers)
    await stream.next_event()
    await survivor.next_event()

    started = time.monotonic()
    await feeder.revoke(env, doomed)
    raw = await stream.closed(within=1.0)
    assert time.monotonic() - started < 1.0
    assert stream.eof
    assert raw.endswith(b": key revoked\n\n")
    refused = await proxy.get("/sdk/v1/flags", headers=doomed.headers)
    assert refused.status == 401
    # A key-only version is sent to no stream: the next event the other key's stream
    # gets is the next real change, as a patch from the flag set it holds.
    changed = await feeder.write(env, {"a": OFF})
    patch = await survivor.next_event()
    assert (patch.event, patch.id) == ("patch", str(changed))
    assert orjson.loads(patch.data)["base"] == 1
    assert not survivor.events
    assert not survivor.eof


async def test_expired_key_stream_is_closed_and_refused(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env = new_env()
    key = make_key("server", expires_at=time.time() + 1.0)
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await stream.next_event()
    raw = await stream.closed(within=3.0)
    assert raw.endswith(b": key expired\n\n")
    assert time.time() >= key.edge.expires_at  # type: ignore[operator]
    refused = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert refused.status == 401
    assert (await refused.json())["errorDetails"] in (
        "this API key has expired",
        "unknown or revoked API key",  # Redis dropped it on time (its TTL) and we asked
    )


async def test_stream_limits_per_key_and_per_process(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key, other = new_env(), make_key("server"), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key, other])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy(max_streams_per_key=1, max_streams=2)
    first = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await first.next_event()
    second = await proxy.get("/sdk/v1/stream", headers=key.headers)
    assert second.status == 429
    assert second.headers["Retry-After"] == "5"
    assert "CRIVLINE_MAX_STREAMS_PER_KEY" in (await second.json())["errorDetails"]

    third = await open_stream(proxy, "/sdk/v1/stream", headers=other.headers)
    await third.next_event()
    fourth = await proxy.get("/ofrep/v1/events", headers=make_key("client").headers)
    assert fourth.status == 401
    full = await proxy.get("/sdk/v1/stream", headers=other.headers)
    assert full.status == 503
    assert "CRIVLINE_MAX_STREAMS" in (await full.json())["errorDetails"]

    # A client that hangs up frees its slot without waiting for a keep-alive.
    first.close()
    await eventually(lambda: len(proxy[appkeys.HUB]) == 1, what="the hung-up stream released")
    again = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    assert (await again.next_event()).event == "put"


async def test_client_keys_cannot_open_the_sdk_stream(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    response = await proxy.get("/sdk/v1/stream", headers=key.headers)
    assert response.status == 403
    assert (await response.json())["errorCode"] == "FORBIDDEN"


async def ofrep_stream_url(proxy: RunningProxy, headers: dict[str, str]) -> tuple[str, Any]:
    response = await proxy.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=headers)
    body = await response.json()
    return body["eventStreams"][0]["url"], response


async def test_ofrep_event_stream_sends_refetch_and_the_refetch_is_served(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": ON}, keys=[key], committed_at=1_771_622_898.5)
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    url, first = await ofrep_stream_url(proxy, key.headers)
    etag = first.headers["ETag"]
    stream = await open_stream(proxy, url.removeprefix(proxy.url))  # no key: the ticket
    assert stream.response.status == 200
    assert await stream.raw_until(len(b"retry: 2000\n\n")) == b"retry: 2000\n\n"

    version = await feeder.write(env, {"a": OFF}, committed_at=1_771_622_999.25)
    event = await stream.next_event()
    assert event.event == "message"
    assert event.id == str(version)
    data = orjson.loads(event.data)
    flags_response = await proxy.get("/sdk/v1/flags", headers=make_key().headers)
    assert flags_response.status == 401
    assert data["type"] == "refetchEvaluation"
    assert data["lastModified"] == 1_771_622_999
    assert data["etag"].startswith(f'"{version}-')
    raw_event = (
        f"id: {version}\nevent: message\ndata: "
        f'{{"type":"refetchEvaluation","etag":{orjson.dumps(data["etag"]).decode()},'
        f'"lastModified":1771622999}}\n\n'
    ).encode()
    assert stream.raw.endswith(raw_event)

    refetch = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        params={"flagConfigEtag": data["etag"], "flagConfigLastModified": data["lastModified"]},
        json={"context": {}},
        headers={**key.headers, "If-None-Match": etag},
    )
    assert refetch.status == 200
    assert refetch.headers["Crivline-Version"] == str(version)
    assert (await refetch.json())["flags"][0]["value"] is False


async def test_refetch_for_a_version_this_proxy_does_not_have_is_a_503(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy(TEST_OPTIONS.with_(refetch_wait_seconds=0.2))
    response = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        params={"flagConfigEtag": '"7-0123456789abcdef"'},
        json={"context": {}},
        headers=key.headers,
    )
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"
    assert "version 7" in (await response.json())["errorDetails"]


async def test_ofrep_stream_opened_after_a_change_is_told_to_refetch_at_once(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": ON}, keys=[key])
    proxy = await start_proxy()
    url, _ = await ofrep_stream_url(proxy, key.headers)  # ticket says: served version 1
    version = await feeder.write(env, {"a": OFF})
    await proxy.loaded(env, version)
    stream = await open_stream(proxy, url.removeprefix(proxy.url))
    event = await stream.next_event()
    assert event.id == str(version)
    assert orjson.loads(event.data)["type"] == "refetchEvaluation"


async def test_ofrep_stream_tickets_are_checked(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": ON}, keys=[key])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    url, _ = await ofrep_stream_url(proxy, key.headers)
    path = url.removeprefix(proxy.url)
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    refused = await proxy.get(tampered)
    assert refused.status == 401
    assert "ticket" in (await refused.json())["errorDetails"]
    assert refused.headers["Access-Control-Allow-Origin"] == "*"

    stream = await open_stream(proxy, path)
    await stream.raw_until(1)
    await feeder.revoke(env, key)
    raw = await stream.closed(within=1.0)
    assert raw.endswith(b": key revoked\n\n")
    again = await proxy.get(path)
    assert again.status == 401  # the ticket dies with its key


async def test_an_environment_leaving_the_edge_ends_its_streams_and_keys(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    await feeder.synced()  # a complete edge: an absent key is unknown
    proxy = await start_proxy()
    stream = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await stream.next_event()
    assert await feeder.store.remove(env)
    raw = await stream.closed(within=2.0)
    assert raw.endswith(b": environment removed from this edge\n\n")
    assert proxy[appkeys.CACHE].get(env) is None
    refused = await proxy.get("/sdk/v1/flags", headers=key.headers)
    assert refused.status == 401


async def test_a_client_that_stops_reading_is_cut_off_and_the_others_keep_up(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"big": flag({"v": "x"}, "v")}, keys=[key])
    proxy = await start_proxy(TEST_OPTIONS.with_(stream_buffer_bytes=256 * 1024))
    healthy = await open_stream(proxy, "/sdk/v1/stream", headers=key.headers)
    await healthy.next_event()

    # A raw client with a tiny receive buffer that never reads after the headers.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = proxy.url.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /sdk/v1/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key.secret}\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    hub = proxy[appkeys.HUB]
    await eventually(lambda: len(hub) == 2, what="both streams registered")

    payload = "y" * 50_000
    version = 1
    try:
        while len(hub) == 2:  # until the hub cuts the stalled client off
            version = await feeder.write(env, {"big": flag({"v": f"{version}{payload}"}, "v")})
            event = await healthy.next_event()
            assert event.id == str(version)  # the reading client never falls behind
            assert version < 400, "the stalled client was never disconnected"
        closed = proxy[appkeys.METRICS].stream_closed.labels("overflow")._value.get()
        assert closed == 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_the_per_key_stream_limit_counts_across_the_edges_processes(
    feeder: Feeder, start_proxy: StartProxy, open_stream: OpenStream
) -> None:
    """Two processes of one edge: a key's streams at one count against it at the other
    (as of the other's last report, every ``usage_flush_seconds``)."""
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": ON}, keys=[key])
    await feeder.synced()
    one = await start_proxy(max_streams_per_key=2)
    two = await start_proxy(max_streams_per_key=2)
    first = await open_stream(one, "/sdk/v1/stream", headers=key.headers)
    await first.next_event()
    second = await open_stream(two, "/sdk/v1/stream", headers=key.headers)
    await second.next_event()
    for proxy in (one, two):
        counts = proxy[KEY_STREAMS]
        await eventually(
            lambda counts=counts: counts.others.get(key.edge.key_hash) == 1,
            what="the other process's stream of the key",
        )
    for proxy in (one, two):
        third = await proxy.get("/sdk/v1/stream", headers=key.headers)
        assert third.status == 429
        assert "on this edge" in (await third.json())["errorDetails"]
    # One ends: once its process has reported, the key may open one again anywhere.
    second.close()
    await eventually(lambda: one[KEY_STREAMS].others.get(key.edge.key_hash, 0) == 0, what="report")
    again = await open_stream(one, "/sdk/v1/stream", headers=key.headers)
    assert (await again.next_event()).event == "put"
