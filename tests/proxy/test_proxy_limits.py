"""Rate limits (local decisions, shared Redis counters) and the stream hub's bounds."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from support.edgekit import PREFIX, TEST_OPTIONS, Feeder, StartProxy, flag, make_key, new_env
from support.waiting import eventually

from crivline.keyspace import Keyspace
from crivline.tasks import cancel_and_wait
from proxy.hub import SDK, Hub
from proxy.metrics import Metrics
from proxy.ratelimit import RateLimiter

T = 1_900_000_000.0  # a fixed second for deterministic windows


async def test_limit_is_shared_across_processes_through_redis(redis: aioredis.Redis) -> None:
    ks = Keyspace(PREFIX, "edge-1")
    a, b = RateLimiter(redis, ks, 20), RateLimiter(redis, ks, 20)
    assert all(a.admit("key", now=T + 0.1) == 0 for _ in range(15))
    await a.flush(at=T + 0.2)
    assert await redis.get(ks.rate_limit("key", int(T))) == b"15"
    await b.flush(at=T + 0.2)  # nothing to push yet
    assert all(b.admit("key", now=T + 0.3) == 0 for _ in range(5))
    await b.flush(at=T + 0.4)  # B learns the edge-wide total: 20
    assert b.admit("key", now=T + 0.5) == 1  # refused: retry after 1 s
    assert b.admit("other", now=T + 0.5) == 0  # keys are independent
    assert b.admit("key", now=T + 1.0) == 0  # a new second, a new window
    ttl = await redis.ttl(ks.rate_limit("key", int(T)))
    assert 0 < ttl <= 3


async def test_limit_holds_per_process_while_redis_is_unreachable() -> None:
    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(dead, Keyspace(PREFIX, "edge-1"), 3)
    flusher = asyncio.create_task(limiter.run(0.01))
    try:
        await eventually(lambda: time.time() % 1 < 0.5, what="the start of a second")
        now = time.time()
        assert [limiter.admit("k", now=now) for _ in range(2)] == [0, 0]
        # The flush fails; the counts stay (as local ones) and the flusher keeps going.
        await eventually(
            lambda: all(w.pending == 0 for w in limiter._windows.values()),
            what="a failed flush handled",
        )
        assert [limiter.admit("k", now=now) for _ in range(2)] == [0, 1]
        assert not flusher.done()
    finally:
        await cancel_and_wait(flusher)
        await dead.aclose()


async def test_429_is_json_with_integer_retry_after(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("client")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    proxy = await start_proxy(rate_limit_per_second=2)
    await eventually(lambda: time.time() % 1 < 0.5, what="the start of a second")
    answers = [
        await proxy.post("/ofrep/v1/evaluate/flags/a", json={}, headers=key.headers)
        for _ in range(3)
    ]
    assert [r.status for r in answers] == [200, 200, 429]
    refused = answers[2]
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/json"
    body = await refused.json()
    assert body["errorCode"] == "RATE_LIMITED"
    assert "rate limit of 2 requests per second" in body["errorDetails"]


class SocketStandIn:
    """A client's socket as the hub sees it: what was written, and how much of it the
    peer has not read yet (``reads`` False: it never reads)."""

    def __init__(self, *, reads: bool) -> None:
        self.reads = reads
        self.written: list[bytes] = []
        self.unsent = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if not self.reads:
            self.unsent += len(data)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def unchunk(written: list[bytes]) -> bytes:
    body = b""
    for piece in written:
        size, _, rest = piece.partition(b"\r\n")
        assert rest.endswith(b"\r\n"), piece
        assert len(rest) == int(size, 16) + 2, piece
        body += rest[:-2]
    return body


async def test_a_slow_client_is_disconnected_without_holding_up_the_others() -> None:
    hub = Hub(
        Metrics(),
        TEST_OPTIONS.with_(stream_buffer_bytes=1000),
        max_streams=10,
        max_streams_per_key=10,
    )
    fast = hub.open("env", "k1", SDK, 0, None)
    slow = hub.open("env", "k2", SDK, 0, None)
    fast_socket, slow_socket = SocketStandIn(reads=True), SocketStandIn(reads=False)
    fast.attach(fast_socket, chunked=True)
    slow.attach(slow_socket, chunked=True)
    sent = []
    for version in range(1, 21):
        event = b"x" * 99 + b"\n"
        sent.append(event)
        hub.publish_sdk("env", version, None, event)
    assert slow.closed
    assert slow.close_reason == "overflow"
    assert slow_socket.aborted
    assert slow_socket.unsent <= 1000
    assert not fast.closed
    assert unchunk(fast_socket.written) == b"".join(sent)
    fast.close("done")
    await asyncio.wait_for(fast.wait_closed(), 5)
    hub.release(fast)
    hub.release(slow)
    assert len(hub) == 0


async def test_every_client_is_handed_the_same_bytes_object() -> None:
    hub = Hub(Metrics(), TEST_OPTIONS, max_streams=10, max_streams_per_key=10)
    sockets = [SocketStandIn(reads=True) for _ in range(3)]
    clients = [hub.open("env", f"k{i}", SDK, 0, None) for i in range(3)]
    for client, socket in zip(clients, sockets, strict=True):
        client.attach(socket, chunked=True)
    hub.publish_sdk("env", 1, None, b"data: put\n\n")
    first = sockets[0].written[0]
    assert unchunk([first]) == b"data: put\n\n"
    assert all(s.written == [first] and s.written[0] is first for s in sockets)
    for client in clients:
        hub.release(client)


async def test_bytes_queue_until_the_socket_is_attached_and_a_farewell_is_written() -> None:
    hub = Hub(Metrics(), TEST_OPTIONS, max_streams=10, max_streams_per_key=10)
    client = hub.open("env", "k", SDK, 0, None)
    client.send(b"opening\n")
    hub.publish_sdk("env", 1, None, b"put\n")
    assert client.take() == b"opening\nput\n"
    assert not client.has_pending()
    plain = SocketStandIn(reads=True)  # an HTTP/1.0 peer: no chunked framing
    client.attach(plain, chunked=False)
    hub.publish_sdk("env", 2, None, b"next\n")
    hub.close_all("shutdown", b"bye\n")
    await asyncio.wait_for(client.wait_closed(), 5)
    assert plain.written == [b"next\n", b"bye\n"]
    assert client.close_reason == "shutdown"
    hub.release(client)
