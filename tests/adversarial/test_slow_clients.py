"""Slow clients cannot exhaust the proxy or control: connections that trickle their
headers (slowloris) or send nothing are dropped after the idle timeout whatever they
send, a body that stops half-way is a 408, and stream readers that stop reading are cut
off once their unsent bytes pass the per-stream bound — while everyone else is served.

The production bounds are 75 s (idle), 30 s (body) and 4 MiB (stream buffer); these
tests shrink them (``ProxyOptions``, ``crivline.httpserver``) to show the mechanism in
seconds. The production values themselves are checked at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from support.control_testkit import control_settings, start_control
from support.edgekit import Central, SSEClient, StartProxy
from support.waiting import eventually
from world import OPERATOR_TOKEN, OPTIONS, World, build_world

from crivline import httpserver
from proxy import appkeys
from proxy.options import ProxyOptions

SLOW = OPTIONS.with_(
    idle_timeout_seconds=1.0, body_timeout_seconds=1.0, stream_buffer_bytes=64 * 1024
)
SLOW_LORIS = 200  # connections that never finish their headers
OpenStream = Callable[..., Awaitable[SSEClient]]


@pytest.fixture
async def slow_world(central: Central, start_proxy: StartProxy) -> World:
    return await build_world(central, start_proxy, options=SLOW, operator_token=OPERATOR_TOKEN)


class Loris:
    """A connection that sends a request line and then one header byte at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.closed_after: float | None = None
        self.answer = b""

    @classmethod
    async def open(cls, port: int, start: bytes) -> Loris:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(start)
        return cls(reader, writer)

    def trickle(self) -> None:
        if not self.writer.is_closing():
            with contextlib.suppress(ConnectionError):
                self.writer.write(b"a")

    async def wait_closed_by_server(self, opened: float, within: float) -> None:
        """Until the server closes (EOF, or a reset: it had unread bytes of ours)."""
        try:
            self.answer = await asyncio.wait_for(self.reader.read(), within)
        except ConnectionError:
            pass
        except TimeoutError:
            return  # still open: closed_after stays None
        self.closed_after = time.monotonic() - opened


async def slowloris(port: int, start: bytes, healthy: Callable[[], Awaitable[None]],
                    idle: float) -> list[Loris]:  # fmt: skip
    """Open the connections, keep them trickling, check ``healthy`` meanwhile; returns
    once the server closed every one of them (or fails after a generous bound)."""
    opened = time.monotonic()
    lorises = [await Loris.open(port, start) for _ in range(SLOW_LORIS)]

    async def keep_trickling() -> None:
        while True:
            for loris in lorises:
                loris.trickle()
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(keep_trickling())
    try:
        await healthy()  # served while all of them hang on
        bound = idle + 3.0  # idle timeout, plus scheduling slack on a loaded 2-core box
        await asyncio.gather(*(loris.wait_closed_by_server(opened, bound) for loris in lorises))
    finally:
        trickler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickler
        for loris in lorises:
            loris.writer.close()
    for loris in lorises:
        assert loris.closed_after is not None, "a trickling connection was never closed"
        assert loris.closed_after < idle + 3.0
        assert b"200 OK" not in loris.answer  # dropped, never served
    return lorises


async def test_slowloris_headers_are_dropped_and_others_served(slow_world: World) -> None:
    world = slow_world
    key = world.acme.key()
    start = b"GET /sdk/v1/flags HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer " + key.encode()
    start += b"\r\nX-Slow: "

    async def healthy() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(50):
                async with session.get(
                    world.proxy.url + "/sdk/v1/flags", headers={"Authorization": f"Bearer {key}"}
                ) as response:
                    assert response.status == 200
                    await response.read()

    silent = [await asyncio.open_connection("127.0.0.1", world.proxy_port) for _ in range(20)]
    try:
        await slowloris(world.proxy_port, start, healthy, SLOW.idle_timeout_seconds)
        for reader, _writer in silent:  # connections that said nothing at all are gone too
            assert await asyncio.wait_for(reader.read(), 1.0) == b""
    finally:
        for _reader, writer in silent:
            writer.close()


@pytest.fixture
async def slow_control(
    database_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, str]]:
    monkeypatch.setattr(httpserver, "IDLE_SECONDS", 1.0)
    monkeypatch.setattr(httpserver, "BODY_SECONDS", 1.0)
    running = await start_control(control_settings(database_url), db, "slowco")
    try:
        yield int(str(running.client.make_url("/").port)), running.token
    finally:
        await running.client.close()


async def test_slowloris_on_control(slow_control: tuple[int, str]) -> None:
    port, token = slow_control
    start = b"GET /api/v1/projects HTTP/1.1\r\nHost: c\r\nX-Slow: "

    async def healthy() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(20):
                async with session.get(
                    f"http://127.0.0.1:{port}/api/v1/projects",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    assert response.status == 200

    await slowloris(port, start, healthy, 1.0)


async def half_a_body(
    port: int, head: bytes, content_type: bytes = b"application/json"
) -> tuple[bytes, float]:
    """Send headers announcing 100 bytes, then 10 of them, then nothing."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head += b"Content-Type: " + content_type + b"\r\nContent-Length: 100\r\n\r\n"
    writer.write(head + b'{"context"')
    try:
        answer = await asyncio.wait_for(reader.read(65536), 5.0)
    finally:
        writer.close()
    return answer, time.monotonic() - started


async def test_a_body_that_stops_half_way_is_a_408(
    slow_world: World, slow_control: tuple[int, str]
) -> None:
    key = slow_world.acme.key().encode()
    for path in (b"/ofrep/v1/evaluate/flags", b"/ofrep/v1/evaluate/flags/checkout"):
        head = b"POST " + path + b" HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer " + key + b"\r\n"
        answer, took = await half_a_body(slow_world.proxy_port, head)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"errorCode":"REQUEST_TIMEOUT"' in answer, answer
        assert 0.9 < took < 4.0
    form = b"application/x-www-form-urlencoded"  # the status page's sign-in form
    status_head = b"POST /status HTTP/1.1\r\nHost: e\r\n"
    answer, took = await half_a_body(slow_world.proxy_port, status_head, form)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 < took < 4.0
    port, token = slow_control
    head = b"POST /api/v1/projects HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer "
    answer, took = await half_a_body(port, head + token.encode() + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"application/problem+json" in answer
    assert 0.9 < took < 4.0


async def stalled_stream(port: int, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SSE client with a 4 KiB receive buffer that never reads after the headers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /sdk/v1/stream HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def test_stalled_stream_readers_are_cut_off_and_readers_keep_up(
    slow_world: World, open_stream: OpenStream
) -> None:
    world, stalled_count = slow_world, 20
    proxy, key = world.proxy, world.acme.key()
    hub, metrics = proxy[appkeys.HUB], proxy[appkeys.METRICS]
    healthy = await open_stream(proxy, "/sdk/v1/stream", headers={"Authorization": f"Bearer {key}"})
    await healthy.next_event()
    stalled = [await stalled_stream(world.proxy_port, key) for _ in range(stalled_count)]
    await eventually(lambda: len(hub) == stalled_count + 1, what="every stream registered")
    bound = SLOW.stream_buffer_bytes
    payload = "y" * 100_000
    try:
        for round_ in range(80):
            if len(hub) == 1:
                break
            variants = {f"{e}-{t}": f"{e}-{t}" for e in ("dev", "prod") for t in ("a", "b")}
            variants["dev-b"] = f"{round_}{payload}"  # a big patch on every stream
            answer: Any = await world.ok(
                world.acme, "PATCH", "/projects/shop/flags/checkout", {"variants": variants}
            )
            assert answer["key"] == "checkout"
            event = await healthy.next_event(within=10)  # the reader keeps up, in order
            assert event.event == "patch"
            # No client ever holds more than its bound (plus the event that overflowed it).
            assert all(c._size <= bound + 2 * len(payload) for c in hub.clients())
        assert len(hub) == 1, "stalled readers were never disconnected"
        assert metrics.stream_closed.labels("overflow")._value.get() == stalled_count
    finally:
        for _reader, writer in stalled:
            writer.close()


def test_production_bounds() -> None:
    options = ProxyOptions()
    assert options.idle_timeout_seconds == httpserver.IDLE_SECONDS == 75.0
    assert options.body_timeout_seconds == httpserver.BODY_SECONDS == 30.0
    assert options.stream_buffer_bytes == 4 * 1024 * 1024
    assert httpserver.handler_args() == {"keepalive_timeout": 75.0}
