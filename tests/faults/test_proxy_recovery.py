"""What the fault suite found in the proxy, each pinned down by a deterministic test.

- A refresh that failed (a Redis connection that died with a restarted Redis) was never
  retried: the environment stayed at its old version until the next announcement for it
  or the 30 s safety resync. Now it is retried, with backoff, until it lands.
- A proxy that started while its edge Redis was empty (a new edge, a Redis restarted
  empty, before syncd wrote it back) answered valid keys with 401 — which SDKs take as
  final — and remembered them as unknown. Now it says 503 + ``Retry-After`` until the
  edge is filled.
- After Valkey was SIGKILLed and restarted empty, one proxy process stayed seconds behind
  its sibling: its reconnect backoff had grown during the outage, the refill's new epoch
  made it drop the subscription, and its first resync failed on a pooled connection to
  the old server. Now a process applies what the refilled Redis holds within a few
  hundred milliseconds, and ``/readyz`` does not say ready while it is behind an
  announced version.
- A fresh proxy answered valid OFREP stream tickets with 401 until it had read the edge's
  shared ticket secret from Redis. Browsers open that stream with an ``EventSource``,
  which treats any answer but ``200 text/event-stream`` as final. Now start-up reads the
  secret before accepting, a request reads it on demand if start-up could not, and a
  proxy that cannot know it (Redis unreachable) answers an empty stream with a
  ``retry:`` hint, which makes the browser come back.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from support.waiting import eventually

from crivline import tokens
from crivline.edge_store import EdgeStore
from crivline.embedded import ValkeyServer, free_port
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.snapshot import EdgeKey, EnvironmentSnapshot
from proxy import appkeys
from proxy.app import create_app
from proxy.options import ProxyOptions
from proxy.tickets import TicketSigner

PREFIX = "fresh:"
EDGE = "edge-fresh"
OPTIONS = ProxyOptions(redis_timeout=0.5, health_interval=0.2, shutdown_timeout=2.0)


async def feed(
    redis_url: str, secret: bytes, *, key: str | None = None, synced: bool = False
) -> tuple[str, str]:
    """One environment with a client key in the edge Redis, and the edge's ticket secret
    (as another proxy process of the edge stored it). Returns (environment, key hash)."""
    env, key = str(uuid.uuid4()), key or tokens.generate(tokens.SecretKind.CLIENT)
    key_hash = tokens.hex_digest(key)
    client = aioredis.from_url(redis_url)
    try:
        store = EdgeStore(client, Keyspace(PREFIX, EDGE))
        await write(store, snapshot(env, key, 7))
        # As another process of the edge would: the first secret stored is the edge's.
        await client.set(store.keyspace.ticket_secret, secret, nx=True)
        if synced:
            marker = await store.begin_full_sync()
            assert await store.finish_full_sync(marker) is not None
    finally:
        await client.aclose()
    return env, key_hash


async def stored_secret(redis_url: str) -> bytes:
    client = aioredis.from_url(redis_url)
    try:
        stored = await client.get(Keyspace(PREFIX, EDGE).ticket_secret)
    finally:
        await client.aclose()
    assert isinstance(stored, bytes)
    return stored


def snapshot(env: str, key: str, version: int) -> EnvironmentSnapshot:
    """Version ``version`` of ``env``: one flag (its variant names the version) and one
    live key, ``key``'s kind."""
    kind = "server" if key.startswith("crv_srv_") else "client"
    flag = {"state": "ENABLED", "variants": {"v": version}, "defaultVariant": "v"}
    return EnvironmentSnapshot(
        environment_id=env,
        environment_key="production",
        project_id="00000000-0000-4000-8000-0000000000b2",
        project_key="app",
        tenant_id="00000000-0000-4000-8000-0000000000a2",
        tenant_key="acme",
        version=version,
        flag_set={"flags": {"a": flag}, "metadata": {"flagSetId": "app/production"}},
        keys=(EdgeKey(tokens.hex_digest(key), str(uuid.UUID(int=1)), kind, None),),
    )


async def write(store: EdgeStore, version: EnvironmentSnapshot) -> None:
    """Apply ``version`` over what the edge holds, as syncd does."""
    base, base_set = await store.read_current(version.environment_id)
    result = await store.apply(
        version, base_version=base, base_flag_set=base_set, committed_at=time.time()
    )
    assert result.applied


def ticket_for(secret: bytes, env: str, key_hash: str, version: int = 7) -> str:
    signer = TicketSigner(OPTIONS.ticket_window_seconds)
    signer.use_secret(secret)
    ticket = signer.issue(env, key_hash, version, time.time())
    assert ticket is not None
    return ticket


Started = tuple[web.Application, str]


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[Started]]]:
    runners: list[web.AppRunner] = []

    async def start(redis_url: str, options: ProxyOptions = OPTIONS) -> Started:
        settings = Settings.from_env(
            {},
            redis_url=redis_url,
            key_prefix=PREFIX,
            edge_id=EDGE,
            proxy_port=free_port(),
            rate_limit_per_second=0,
        )
        app = create_app(settings, options)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", settings.proxy_port).start()
        return app, f"http://127.0.0.1:{settings.proxy_port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


async def open_events(url: str, ticket: str) -> tuple[int, dict[str, str], bytes]:
    """Open the event stream; the status, headers and whatever arrives in 1 s (or until
    the server ends it)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/ofrep/v1/events", params={"ticket": ticket}) as response,
    ):
        body = b""
        try:
            async with asyncio.timeout(1.0):
                async for chunk in response.content.iter_any():
                    body += chunk
        except TimeoutError:
            pass
        return response.status, dict(response.headers), body


async def test_start_up_reads_the_edge_ticket_secret_before_accepting(
    redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    secret = secrets.token_hex(32).encode()
    env, key_hash = await feed(redis_url, secret)
    app, url = await start_proxy(redis_url)
    # Nothing has run since the listening socket opened: the secret came with start-up.
    assert app[appkeys.TICKETS].secret == secret
    status, headers, body = await open_events(url, ticket_for(secret, env, key_hash))
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/event-stream")
    assert body.startswith(b"retry: ")


async def test_a_secret_start_up_could_not_read_is_read_on_the_first_ticket(
    valkey: Any, redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    server: ValkeyServer = valkey
    secret = secrets.token_hex(32).encode()
    await asyncio.to_thread(server.stop)
    try:
        app, url = await start_proxy(redis_url)
        assert not app[appkeys.TICKETS].ready  # Redis was not there to ask
        await asyncio.sleep(1.5)  # the subscriber's reconnect backoff grows meanwhile
    finally:
        await asyncio.to_thread(server.start)
    env, key_hash = await feed(redis_url, secret)
    # The proxy's reconnection may have stored its own proposal first (the backoff is
    # short on a loaded machine); either way the edge's secret is the one Redis holds.
    secret = await stored_secret(redis_url)
    status, _headers, body = await open_events(url, ticket_for(secret, env, key_hash))
    assert status == 200, body
    assert body.startswith(b"retry: ")
    assert app[appkeys.TICKETS].secret == secret


async def test_without_redis_and_without_a_secret_the_stream_says_retry(
    valkey: Any, redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    server: ValkeyServer = valkey
    secret = secrets.token_hex(32).encode()
    env, key_hash = await feed(redis_url, secret)
    await asyncio.to_thread(server.stop)
    try:
        _app, url = await start_proxy(redis_url)
        status, headers, body = await open_events(url, ticket_for(secret, env, key_hash))
    finally:
        await asyncio.to_thread(server.start)
    # An EventSource reconnects after an ended 200 stream; it would give up on a 401/503.
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers.get("Retry-After") == "1"
    assert body.startswith(b"retry: ")
    assert b"event:" not in body  # and nothing else: the stream ended, nothing was granted


# -- a failed refresh is retried --------------------------------------------------------------


async def test_a_failed_refresh_is_retried_without_another_announcement(
    redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    env, _key_hash = await feed(redis_url, b"s", synced=True)
    app, _url = await start_proxy(redis_url)
    cache = app[appkeys.CACHE]
    await eventually(lambda: cache.get(env) is not None, what="the environment to load")
    metrics = app[appkeys.METRICS].registry

    def failed() -> float:
        value = metrics.get_sample_value(
            "crivline_proxy_environment_refreshes_total", {"outcome": "error"}
        )
        return value or 0.0

    async with announced_but_unreadable(redis_url, env):
        await eventually(lambda: failed() >= 1, what="the refresh to fail")
    await eventually(lambda: served_version(app, env) == 8, what="version 8")


def served_version(app: web.Application, env: str) -> int:
    state = app[appkeys.CACHE].get(env)
    return state.version if state is not None else 0


@asynccontextmanager
async def announced_but_unreadable(redis_url: str, env: str) -> AsyncIterator[None]:
    """Version 8 of ``env`` is announced while its hash cannot be read (so this process's
    refresh fails); on leaving, version 8 lands in Redis without a word on the changes
    channel."""
    keyspace = Keyspace(PREFIX, EDGE)
    name = keyspace.environment(env)
    client = aioredis.from_url(redis_url)
    try:
        await client.rename(name, name + ":aside")
        await client.set(name, b"not a hash")
        await client.publish(keyspace.changes, b'{"e":"%s","v":8,"at":1}' % env.encode())
        yield
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.rename(name + ":aside", name)
            pipe.hset(name, "version", 8)
            await pipe.execute()
    finally:
        await client.aclose()


# -- keys an empty edge does not know yet --------------------------------------------------------


async def flags_status(url: str, key: str) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"{url}/sdk/v1/flags", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        await r.read()
        return r.status, dict(r.headers)


async def test_an_empty_edge_says_retry_to_keys_it_does_not_know_yet(
    redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    key = tokens.generate(tokens.SecretKind.SERVER)
    _app, url = await start_proxy(redis_url)  # the edge Redis is empty: syncd wrote nothing
    status, headers = await flags_status(url, key)
    assert status == 503
    assert headers["Retry-After"] == "1"
    # Not remembered as unknown: once syncd has written the edge, the key works at once.
    await feed(redis_url, b"s", key=key, synced=True)
    status, _ = await flags_status(url, key)
    assert status == 200


async def test_during_a_full_sync_an_absent_key_is_retry_and_after_it_unknown(
    redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    await feed(redis_url, b"s")  # one environment written, the full sync still running
    client = aioredis.from_url(redis_url)
    store = EdgeStore(client, Keyspace(PREFIX, EDGE))
    try:
        marker = await store.begin_full_sync()
        _app, url = await start_proxy(redis_url)
        stranger = tokens.generate(tokens.SecretKind.SERVER)
        status, _ = await flags_status(url, stranger)
        assert status == 503
        assert await store.finish_full_sync(marker) is not None
    finally:
        await client.aclose()
    status, _ = await flags_status(url, stranger)
    assert status == 401  # the edge is complete: an absent key is unknown


# -- after Redis restarts empty, no process stays behind its sibling ------------------------


class RefillingSyncd:
    """Writes one environment the way syncd does: a full sync into an empty Redis (a new
    epoch, reconciled, heartbeat), then one version at a time, each announced."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.env = str(uuid.uuid4())
        self.key = tokens.generate(tokens.SecretKind.SERVER)
        self.keyspace = Keyspace(PREFIX, EDGE)

    async def _with_store(self, work: Callable[[EdgeStore], Awaitable[None]]) -> None:
        client = aioredis.from_url(self.redis_url)  # a fresh connection: Redis restarted
        try:
            await work(EdgeStore(client, self.keyspace))
        finally:
            await client.aclose()

    async def full_sync(self, version: int) -> None:
        async def run(store: EdgeStore) -> None:
            marker = await store.begin_full_sync()
            await write(store, snapshot(self.env, self.key, version))
            assert await store.finish_full_sync(marker) is not None
            await store.heartbeat(60.0, {"pid": 0})

        await self._with_store(run)

    async def write(self, version: int) -> None:
        async def run(store: EdgeStore) -> None:
            await write(store, snapshot(self.env, self.key, version))

        await self._with_store(run)


async def test_after_redis_restarts_empty_no_process_stays_behind(
    valkey: Any, redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    """The soak's sequence: Valkey SIGKILLed, down for 1.6 s, restarted empty, syncd
    refilling it at once (a new epoch) and writing on; two processes of the edge.

    It was: the subscriber's backoff had grown while Redis was down (up to 2 s, and it
    did not start over after a session that had been up), and the new epoch made the
    health monitor drop the subscription — so one process sat unsubscribed for a
    second or two while its sibling followed every announcement. Now a new epoch only
    wakes the resync, and the reconnect backoff is capped at 0.25 s."""
    server: ValkeyServer = valkey
    syncd = RefillingSyncd(redis_url)
    await syncd.full_sync(7)
    # The second process polls syncd's health slowly: the refill's new epoch is what it
    # sees next, not the empty Redis in between.
    apps = [
        (await start_proxy(redis_url))[0],
        (await start_proxy(redis_url, replace(OPTIONS, health_interval=0.5)))[0],
    ]
    await eventually(
        lambda: all(served_version(app, syncd.env) == 7 for app in apps), what="version 7"
    )
    await eventually(
        lambda: all(app[appkeys.STATUS].epoch is not None for app in apps), what="the epoch"
    )

    await asyncio.to_thread(server.kill)
    await eventually(
        lambda: not any(app[appkeys.STATUS].redis_up for app in apps), what="redis lost"
    )
    await asyncio.sleep(1.6)  # the outage itself: the reconnect backoff grows meanwhile
    await asyncio.to_thread(server.start)
    back = time.monotonic()
    await syncd.full_sync(12)  # syncd fills the empty Redis at once: a new epoch
    # The bound: reconnect (at most 0.25 s after Redis answers) plus one resync — a few
    # hundred milliseconds; 1 s leaves room for a loaded machine. It took 3.5 s before.
    await eventually(
        lambda: all(served_version(app, syncd.env) == 12 for app in apps),
        within=1.0,
        what="both processes at the refilled version",
    )
    caught_up = time.monotonic() - back
    sessions = [app[appkeys.SUBSCRIBER].sessions for app in apps]

    # syncd writes on; every process follows each announcement, none falls behind.
    lags = []
    for version in range(13, 19):
        written = time.monotonic()
        await syncd.write(version)
        await eventually(
            lambda v=version: all(served_version(app, syncd.env) == v for app in apps),  # type: ignore[misc]
            what=f"version {version} in both processes",
        )
        lags.append(time.monotonic() - written)
    # Nobody reconnected meanwhile: the new epoch did not drop a subscription.
    assert [app[appkeys.SUBSCRIBER].sessions for app in apps] == sessions
    print(  # the measured bound, shown with -s
        f"caught up {caught_up:.3f}s after Redis restarted; "
        f"announcement to both processes: max {max(lags) * 1000:.0f} ms"
    )


async def test_readyz_is_not_ready_while_behind_an_announced_version(
    redis_url: str, start_proxy: Callable[..., Awaitable[Started]]
) -> None:
    syncd = RefillingSyncd(redis_url)
    await syncd.full_sync(7)
    app, url = await start_proxy(redis_url)

    async def readyz() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{url}/readyz") as response,
        ):
            body: dict[str, Any] = await response.json()
            return body

    async def is_ready() -> bool:
        return bool((await readyz())["status"] == "ready")

    async def not_ready() -> dict[str, Any] | None:
        body = await readyz()
        return None if body["status"] == "ready" else body

    await eventually(is_ready, what="/readyz ready")
    async with announced_but_unreadable(redis_url, syncd.env):
        body = await eventually(not_ready, what="/readyz no longer ready")
        assert body["status"] == "degraded"  # still answering from memory, not "ready"
        assert any("behind a version announced" in p for p in body["reasons"]), body
    await eventually(lambda: served_version(app, syncd.env) == 8, what="version 8")
    await eventually(is_ready, what="/readyz ready again")
