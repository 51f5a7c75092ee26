"""The maximum stream lifetime: a real proxy ends its streams with a jittered ``retry:``,
real clients (aiohttp, behaving as EventSource does) come back by ``Last-Event-ID``
after that delay, and none misses a change published meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from support.edgekit import Feeder, Key, RunningProxy, StartProxy, flag, make_key, new_env
from support.waiting import eventually

from crivline import sse
from proxy import appkeys
from proxy.hub import Hub
from proxy.metrics import Metrics
from proxy.options import ProxyOptions

STREAMS = 200
LIFETIME = 1.0
WINDOW = 2.0
FAREWELL = "stream lifetime reached; reconnect"


class Resuming:
    """One SDK stream client: follows the patch chain, and when the server ends the
    stream waits the ``retry:`` it was given and resumes from its last event id."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.connections = 0
        self.farewell_retries: list[int] = []
        self.gaps: list[tuple[int | None, int]] = []
        self.ended_otherwise = 0

    def _event(self, event: sse.Event) -> None:
        if event.event == "put":
            self.version = int(event.id or 0)
        elif event.event == "patch":
            patch = orjson.loads(event.data)
            if patch["base"] != self.version:
                self.gaps.append((self.version, patch["base"]))
            self.version = patch["version"]

    async def run(self, session: aiohttp.ClientSession, url: str, key: Key) -> None:
        while True:
            headers = dict(key.headers)
            if self.version is not None:
                headers["Last-Event-ID"] = str(self.version)
            parser = sse.Parser()
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                self.connections += 1
                async for chunk in response.content.iter_any():
                    for event in parser.feed(chunk):
                        self._event(event)
            if FAREWELL not in parser.comments or parser.retry is None:
                self.ended_otherwise += 1
                return
            self.farewell_retries.append(parser.retry)
            # What an EventSource does: wait the server's reconnection time, then resume.
            await asyncio.sleep(parser.retry / 1000)


async def test_streams_end_at_their_lifetime_and_resume_spread_without_missing_a_change(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    env, key = new_env(), make_key("server")
    flags: dict[str, Any] = {"n": flag({"a": 0, "b": 1}, "a")}
    version = await feeder.write(env, flags, keys=[key])
    await feeder.synced()
    proxy: RunningProxy = await start_proxy(
        max_stream_seconds=LIFETIME, stream_reconnect_window=WINDOW
    )
    await proxy.loaded(env, version)

    clients = [Resuming() for _ in range(STREAMS)]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
    )
    url = proxy.url + "/sdk/v1/stream"
    tasks = [asyncio.create_task(c.run(session, url, key)) for c in clients]
    try:
        await eventually(
            lambda: all(c.version == version for c in clients), within=30, what="every stream open"
        )
        # Changes keep coming while the streams end and come back.
        while not all(len(c.farewell_retries) >= 2 for c in clients):
            flags["n"] = flag({"a": 0, "b": 1}, "b" if version % 2 else "a")
            version = await feeder.write(env, flags)
            await eventually(
                lambda v=version: proxy[appkeys.CACHE].get(env).version >= v,
                what=f"version {version} in the proxy",
            )
            await asyncio.sleep(0.05)  # pacing the writer, not waiting for a condition
        final = version
        # A client told to go by its second farewell comes back after its retry: wait for
        # that third connection too, not only for the version.
        await eventually(
            lambda: all(c.version == final and c.connections >= 3 for c in clients),
            within=30,
            what=f"every client back and at version {final}",
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await session.close()

    assert all(not c.gaps for c in clients), [c.gaps for c in clients if c.gaps][:5]
    assert all(c.ended_otherwise == 0 for c in clients)
    assert all(c.connections >= 3 for c in clients)
    # The retry hints are spread across the whole window: every quarter of it is used.
    window_ms = round(WINDOW * 1000)
    retries = [r for c in clients for r in c.farewell_retries]
    assert all(0 <= r <= window_ms for r in retries)
    quarters = {min(3, r * 4 // window_ms) for r in retries}
    assert quarters == {0, 1, 2, 3}, sorted(retries)
    assert len(set(retries)) > len(retries) // 4


def _hub(lifetime: float, window: float = 1.0) -> Hub:
    return Hub(
        Metrics(),
        ProxyOptions(),
        max_streams=10,
        max_streams_per_key=10,
        max_lifetime=lifetime,
        reconnect_window=window,
    )


def test_only_streams_past_their_lifetime_are_ended_with_a_retry_in_the_window() -> None:
    hub = _hub(lifetime=10.0, window=0.5)
    old = hub.open("env", "k", "sdk", 1, None)
    assert old.ends_at is not None
    young = hub.open("env", "k", "sdk", 1, None)
    young.ends_at = old.ends_at + 5
    assert hub.end_lifetimes(now=old.ends_at - 0.001) == 0
    assert hub.end_lifetimes(now=old.ends_at) == 1
    assert old.closed
    assert old.close_reason == "lifetime"
    assert not young.closed
    farewell = old.take()
    parser = sse.Parser()
    assert parser.feed(farewell) == []
    assert parser.retry is not None
    assert 0 <= parser.retry <= 500
    assert parser.comments == [FAREWELL]


def test_without_a_lifetime_streams_have_no_end() -> None:
    hub = _hub(lifetime=0.0)
    client = hub.open("env", "k", "sdk", 1, None)
    assert client.ends_at is None
    assert hub.end_lifetimes(now=1e12) == 0
    assert not client.closed
