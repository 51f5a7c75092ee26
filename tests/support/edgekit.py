"""Helpers and fixtures for the proxy tests: a real server on the real test Valkey, fed the
way syncd feeds it (the fixtures are re-exported by ``conftest.py``).

- ``feeder``: writes environments into Valkey through :class:`crivline.edge_store.EdgeStore`
  (syncd's own atomic, version-guarded writer), and marks the edge synced.
- ``start_proxy``: starts ``create_app`` on a free port in the test's event loop and
  returns a :class:`RunningProxy` (its URL, its app, an HTTP session); every proxy
  started is shut down at the end of the test.
- :class:`SSEClient`: reads a stream through :class:`crivline.sse.Parser`, keeping the
  raw bytes for exact comparisons.
- :func:`eventually`: polls a condition until it holds or a deadline passes (a test never
  sleeps in place of a condition).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from crivline import sse, tokens
from crivline.edge_store import EdgeStore
from crivline.embedded import free_port
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.snapshot import EdgeKey, EnvironmentSnapshot
from crivline.tracing import DISABLED, Tracing
from crivline.wire import Runner
from proxy import appkeys
from proxy.app import create_app
from proxy.options import ProxyOptions
from support.roles import part_url
from support.waiting import eventually

PREFIX = "t:"
EDGE = "edge-1"
TENANT = "00000000-0000-4000-8000-0000000000a1"
PROJECT = "00000000-0000-4000-8000-0000000000b1"

# Fast timings for tests; long keep-alives so they do not interleave with exact-byte checks.
TEST_OPTIONS = ProxyOptions(
    keepalive_seconds=30.0,
    health_interval=0.1,
    reconnect_max_seconds=0.2,
    expiry_sweep_seconds=0.05,
    rate_limit_flush_seconds=0.05,
    redis_timeout=1.0,
    shutdown_timeout=5.0,
)


def new_env() -> str:
    return str(uuid.uuid4())


@dataclass
class Key:
    secret: str
    edge: EdgeKey

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def make_key(kind: str = "server", expires_at: float | None = None) -> Key:
    secret = tokens.generate(tokens.SecretKind(kind))
    return Key(secret, EdgeKey(tokens.hex_digest(secret), str(uuid.uuid4()), kind, expires_at))


@dataclass
class Feeder:
    """Writes the edge Redis with syncd's writer (EdgeStore)."""

    redis: aioredis.Redis
    keyspace: Keyspace
    store: EdgeStore
    keys: dict[str, list[EdgeKey]] = field(default_factory=dict)
    flag_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags_versions: dict[str, int] = field(default_factory=dict)

    async def write(
        self,
        env: str,
        flags: dict[str, Any] | None = None,
        *,
        keys: list[Key] | None = None,
        evaluators: dict[str, Any] | None = None,
        version: int | None = None,
        committed_at: float | None = None,
        keys_only: bool = False,
        flags_version: int | None = None,
    ) -> int:
        """Write ``env`` (flags default to the previous ones; keys are added to the
        live set); returns the version written. ``keys_only``: a version like control's
        for a key or a plan, which leaves the flag set's version (migration 0007);
        ``flags_version`` names it outright (a write that merged several versions)."""
        base, base_set = await self.store.read_current(env)
        if flags is None:
            flags = dict(self.flag_sets.get(env, {}).get("flags", {}))
        doc: dict[str, Any] = {"flags": flags, "metadata": {"flagSetId": "app/production"}}
        if evaluators:
            doc["$evaluators"] = evaluators
        self.flag_sets[env] = doc
        live = self.keys.setdefault(env, [])
        live.extend(k.edge for k in keys or ())
        written = version if version is not None else base + 1
        if flags_version is None:
            flags_version = written
            if keys_only and env in self.flags_versions:
                flags_version = self.flags_versions[env]
        snapshot = EnvironmentSnapshot(
            environment_id=env,
            environment_key="production",
            project_id=PROJECT,
            project_key="app",
            tenant_id=TENANT,
            tenant_key="acme",
            version=written,
            flag_set=doc,
            keys=tuple(live),
            flags_version=flags_version,
        )
        result = await self.store.apply(
            snapshot,
            base_version=base,
            base_flag_set=base_set,
            committed_at=time.time() if committed_at is None else committed_at,
        )
        assert result.applied, f"version {snapshot.version} not applied over {base}"
        self.flags_versions[env] = flags_version
        return snapshot.version

    async def revoke(self, env: str, key: Key) -> int:
        """Revoke a key as control does: a version that changes no flag set."""
        self.keys[env] = [k for k in self.keys.get(env, []) if k.key_hash != key.edge.key_hash]
        return await self.write(env, keys_only=True)

    async def synced(self) -> None:
        """What syncd writes when the edge is complete and fresh."""
        marker = await self.store.begin_full_sync()
        assert await self.store.finish_full_sync(marker) is not None
        await self.store.heartbeat(60.0, {"pid": 0})


@pytest.fixture
async def feeder(redis: aioredis.Redis) -> Feeder:
    ks = Keyspace(PREFIX, EDGE)
    return Feeder(redis, ks, EdgeStore(redis, ks))


@dataclass
class RunningProxy:
    url: str
    app: web.Application
    runner: web.AppRunner
    session: aiohttp.ClientSession

    def __getitem__(self, key: web.AppKey[Any]) -> Any:
        return self.app[key]

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.get(self.url + path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.post(self.url + path, **kwargs)

    async def loaded(self, env: str, version: int | None = None) -> None:
        cache = self.app[appkeys.CACHE]

        def ready() -> bool:
            state = cache.get(env)
            return state is not None and (version is None or state.version >= version)

        await eventually(ready, what=f"environment {env} at version {version} in the proxy")

    async def stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


def proxy_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": PREFIX,
        "edge_id": EDGE,
        "proxy_port": free_port(),
        "rate_limit_per_second": 100_000,
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


StartProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def start_proxy(redis_url: str) -> AsyncIterator[StartProxy]:
    started: list[RunningProxy] = []

    async def start(
        options: ProxyOptions = TEST_OPTIONS, tracing: Tracing = DISABLED, **overrides: Any
    ) -> RunningProxy:
        settings = proxy_settings(redis_url, **overrides)
        app = create_app(settings, options, tracing)
        runner = Runner(app, handle_signals=False, shutdown_timeout=options.shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.proxy_port, reuse_port=True)
        await site.start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        running = RunningProxy(
            f"http://{settings.host}:{settings.proxy_port}", app, runner, session
        )
        started.append(running)
        await eventually(
            lambda: app[appkeys.SUBSCRIBER].resynced.is_set(), what="the proxy's first resync"
        )
        return running

    yield start
    for running in reversed(started):
        await running.stop()


class SSEClient:
    """One open stream: parsed events plus the raw bytes received."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = sse.Parser()
        self.raw = bytearray()
        self.events: deque[sse.Event] = deque()
        self.eof = False

    async def _read(self, within: float) -> None:
        chunk = await asyncio.wait_for(self.response.content.readany(), within)
        if not chunk:
            self.eof = True
            raise EOFError("stream closed")
        self.raw += chunk
        self.events.extend(self.parser.feed(chunk))

    async def next_event(self, within: float = 5.0) -> sse.Event:
        deadline = time.monotonic() + within
        while not self.events:
            await self._read(max(0.01, deadline - time.monotonic()))
        return self.events.popleft()

    async def raw_until(self, size: int, within: float = 5.0) -> bytes:
        """Read until at least ``size`` raw bytes arrived; returns them all."""
        deadline = time.monotonic() + within
        while len(self.raw) < size:
            await self._read(max(0.01, deadline - time.monotonic()))
        return bytes(self.raw)

    async def closed(self, within: float = 5.0) -> bytes:
        """Wait until the server ends the stream; returns everything received."""
        deadline = time.monotonic() + within
        try:
            while True:
                await self._read(max(0.01, deadline - time.monotonic()))
        except (EOFError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass
        return bytes(self.raw)

    def close(self) -> None:
        self.response.close()


@pytest.fixture
async def open_stream() -> AsyncIterator[Callable[..., Awaitable[SSEClient]]]:
    opened: list[SSEClient] = []

    async def open_(proxy: RunningProxy, path: str, **kwargs: Any) -> SSEClient:
        response = await proxy.session.get(
            proxy.url + path, timeout=aiohttp.ClientTimeout(total=None, sock_read=None), **kwargs
        )
        client = SSEClient(response)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()


def flag(variants: dict[str, Any], default: str | None, **extra: Any) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": variants, "defaultVariant": default, **extra}


# -- the real pipeline: control API → Postgres → syncd → Valkey -------------------------


@dataclass
class Central:
    """A running control API (the only writer of Postgres) and a syncd daemon feeding
    the edge Valkey from it, as in production."""

    url: str
    token: str
    session: aiohttp.ClientSession
    daemon: Any
    db: Any

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method,
            f"{self.url}/api/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            raw = await response.read()
            return response.status, orjson.loads(raw) if raw else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.call(method, path, body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    async def shop(self) -> None:
        """Project ``shop`` with environment ``prod`` and a boolean flag ``checkout``
        (variants on/off, default off; disabled until a test enables it)."""
        await self.ok("POST", "/projects", {"key": "shop", "name": "Shop"})
        await self.ok("POST", "/projects/shop/environments", {"key": "prod"})
        await self.ok(
            "POST",
            "/projects/shop/flags",
            {"key": "checkout", "type": "boolean", "variants": {"on": True, "off": False},
             "defaultVariant": "off"},
        )  # fmt: skip

    async def environment_id(self, project: str, env: str) -> str:
        value = await self.db.fetchval(
            "SELECT e.id::text FROM environments e JOIN projects p ON p.id = e.project_id "
            "WHERE p.key = $1 AND e.key = $2",
            project,
            env,
        )
        return str(value)

    async def create_key(self, project: str, env: str, kind: str) -> tuple[str, str]:
        answer = await self.ok(
            "POST", f"/projects/{project}/environments/{env}/keys", {"kind": kind}
        )
        return answer["key"], answer["apiKey"]["id"]

    async def set_state(self, project: str, flag: str, env: str, **state: Any) -> int:
        answer = await self.ok("PUT", f"/projects/{project}/flags/{flag}/environments/{env}", state)
        return int(answer["environmentVersion"])


@pytest.fixture
async def central(database_url: str, redis_url: str, db: Any) -> AsyncIterator[Central]:
    async with running_central(database_url, redis_url, db) as running:
        yield running


@asynccontextmanager
async def running_syncd(
    database_url: str,
    redis_url: str,
    *,
    edge: str = EDGE,
    prefix: str = PREFIX,
    tracing: Tracing = DISABLED,
    bus_url: str | None = None,
    reconcile_interval: float = 0.5,
) -> AsyncIterator[Any]:
    """A syncd daemon feeding ``edge`` (under ``prefix``) in the test Valkey from Postgres,
    ready. With ``bus_url`` its wake-ups come from that bus only (no LISTEN)."""
    import asyncpg

    from crivline.snapshot import set_json_codecs
    from syncd.config import SyncdConfig
    from syncd.daemon import Daemon

    syncd_url = part_url(database_url, "syncd")
    primary = await asyncpg.create_pool(syncd_url, min_size=1, max_size=4, init=set_json_codecs)
    syncd_redis = aioredis.from_url(redis_url)
    bus = aioredis.from_url(bus_url) if bus_url is not None else None

    async def listen_connect() -> asyncpg.Connection:
        return await asyncpg.connect(syncd_url, timeout=5)

    daemon = Daemon(
        SyncdConfig(
            keyspace=Keyspace(prefix, edge),
            reconcile_interval=reconcile_interval,
            heartbeat_ttl=5.0,
            port=0,
            io_timeout=2.0,
            listen_probe_interval=0.5,
            listen=bus is None,
        ),
        primary=primary,
        redis=syncd_redis,
        bus=bus,
        listen_connect=listen_connect,
        tracing=tracing,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.readiness()["ready"], within=15, what="syncd ready")
        yield daemon
    finally:
        await daemon.close()
        await task
        await primary.close()
        await syncd_redis.aclose()
        if bus is not None:
            await bus.aclose()


@asynccontextmanager
async def running_central(
    database_url: str,
    redis_url: str,
    db: Any,
    *,
    tracing: Tracing = DISABLED,
    syncd_tracing: Tracing = DISABLED,
) -> AsyncIterator[Central]:
    """Control on a free port (the only writer) and a syncd for :data:`EDGE`."""
    from control.app import create_app as create_control
    from crivline.seed import create_tenant

    control_settings = Settings.from_env(
        {},
        database_url=database_url,
        control_database_url=part_url(database_url, "control"),
        control_port=free_port(),
    )
    control_app = create_control(control_settings, tracing)
    runner = Runner(control_app, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", control_settings.control_port).start()
        # Uncapped, so no test meets the free tier's daily quota by accident.
        tenant = await create_tenant(db, "acme", plan="enterprise")
        async with (
            running_syncd(database_url, redis_url, tracing=syncd_tracing) as daemon,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        ):
            yield Central(
                f"http://127.0.0.1:{control_settings.control_port}",
                tenant.token,
                session,
                daemon,
                db,
            )
    finally:
        await runner.cleanup()
