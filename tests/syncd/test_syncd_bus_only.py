"""Bus-only edges: syncd reads versions and snapshots from a real streaming standby
(``pg_basebackup`` of the suite's PostgreSQL) and takes wake-ups from the bus alone;
``crivline relay`` LISTENs on the primary and republishes every bump on the bus.

- the primary never sees a connection from a bus-only edge (pg_stat_activity);
- a change committed by a control that is SIGKILLed right after the commit (its own bus
  publish never reaches the bus) still reaches every edge, through the relay;
- a standby that lags the bus never makes an edge show an older version: the wake-up
  waits for the replay, or (past ``standby_wait``) is left to reconciliation.

Reconciliation is slowed to a minute where a test proves the *bus* delivered a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from support.standby import standby_url_for
from syncd_testkit import Project, add_flag, make_project, set_default, wait_for

from crivline.edge_store import EdgeStore
from crivline.embedded import PostgresStandby, free_port
from crivline.keyspace import Keyspace
from crivline.seed import create_tenant
from crivline.tasks import cancel_and_wait
from relay.relay import Relay
from syncd.clients import postgres_pool, redis_options
from syncd.config import SyncdConfig
from syncd.daemon import Daemon

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
BUS_QUEUED = "crivline_syncd_wakeups_total"
RESYNCS = "crivline_syncd_reconcile_resyncs_total"
QUIET = 60.0  # a reconciliation interval no test waits for: only the bus can explain a change


@dataclass
class Edge:
    daemon: Daemon
    task: asyncio.Task[None]
    pool: asyncpg.Pool
    redis: aioredis.Redis
    bus: aioredis.Redis

    @property
    def store(self) -> EdgeStore:
        return self.daemon.store

    def sample(self, name: str, **labels: str) -> float:
        return self.daemon.metrics.registry.get_sample_value(name, labels) or 0.0

    async def stop(self) -> None:
        await self.daemon.close()
        await self.task
        await self.pool.close()
        await self.redis.aclose()
        await self.bus.aclose()


StartEdge = Callable[..., Awaitable[Edge]]


@pytest.fixture
async def standby(pg_standby: PostgresStandby) -> AsyncIterator[PostgresStandby]:
    yield pg_standby
    # A test that paused replay must not leave the session's standby paused.
    conn = await asyncpg.connect(pg_standby.url)
    try:
        await conn.execute("SELECT pg_wal_replay_resume()")
    finally:
        await conn.close()


@pytest.fixture
async def standby_url(standby: PostgresStandby, database_url: str) -> str:
    return await standby_url_for(standby, database_url)


@pytest.fixture
async def relay(database_url: str, redis_url: str) -> AsyncIterator[Relay]:
    bus = aioredis.from_url(redis_url)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            database_url, timeout=5, server_settings={"application_name": "crivline-relay"}
        )

    relay = Relay(connect, bus, Keyspace(), sweep_interval=0.5, timeout=5.0)
    task = asyncio.create_task(relay.run())
    try:
        await wait_for(lambda: relay.listening, 10, "the relay to listen")
        yield relay
    finally:
        await cancel_and_wait(task)
        await bus.aclose()


@pytest.fixture
async def start_edge(standby_url: str, redis_url: str) -> AsyncIterator[StartEdge]:
    """A bus-only syncd: its pool on the standby, its own Valkey database, the bus."""
    started: list[Edge] = []
    base = redis_url.rpartition("/")[0]

    async def start(number: int, *, interval: float = QUIET, standby_wait: float = 30.0) -> Edge:
        config = SyncdConfig(
            keyspace=Keyspace("crivline:", f"edge-{number}"),
            bus_only=True,
            listen=False,
            reconcile_interval=interval,
            standby_wait=standby_wait,
            port=0,
            io_timeout=5.0,
        )
        pool = await postgres_pool(standby_url, config)  # application_name crivline-syncd
        redis = aioredis.Redis.from_url(f"{base}/{number}", **redis_options(config))
        bus = aioredis.Redis.from_url(redis_url, **redis_options(config))
        daemon = Daemon(config, primary=pool, redis=redis, bus=bus)
        edge = Edge(daemon, asyncio.create_task(daemon.run()), pool, redis, bus)
        started.append(edge)
        await wait_for(lambda: edge.daemon.readiness()["ready"], 20, f"edge {number} ready")
        await wait_for(lambda: edge.daemon.readiness()["bus"], 10, f"edge {number} on the bus")
        return edge

    try:
        yield start
    finally:
        for edge in reversed(started):
            await edge.stop()


async def standby_at(standby_url: str, env: str, version: int) -> None:
    """Wait until the standby has replayed ``version`` of ``env``."""
    conn = await asyncpg.connect(standby_url)
    try:

        async def replayed() -> bool:
            seen = await conn.fetchval("SELECT version FROM environments WHERE id = $1", env)
            return seen is not None and seen >= version

        await wait_for(replayed, 20, f"the standby to replay {env} v{version}")
    finally:
        await conn.close()


async def prepared(db: asyncpg.Connection, standby_url: str) -> tuple[Project, str, int]:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    env = project.environments["production"]
    version = int(await db.fetchval("SELECT version FROM environments WHERE id = $1", env))
    await standby_at(standby_url, env, version)
    return project, env, version


async def at_version(edges: list[Edge], env: str, version: int, within: float) -> None:
    async def everywhere() -> bool:
        return all([await e.store.version(env) == version for e in edges])

    await wait_for(everywhere, within, f"every edge at v{version}")


async def backends(url: str, database: str, name: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2",
            database,
            name + "%",
        )
    finally:
        await conn.close()
    return count


async def test_bus_only_edges_never_connect_to_the_primary(
    db: asyncpg.Connection,
    database_url: str,
    standby_url: str,
    standby: PostgresStandby,
    relay: Relay,
    start_edge: StartEdge,
) -> None:
    project, env, version = await prepared(db, standby_url)
    edges = [await start_edge(n) for n in (1, 2, 3)]
    await at_version(edges, env, version, 10)

    # A write that only NOTIFYs (nobody publishes on the bus but the relay).
    changed = await set_default(db, project, "production", "checkout", "on")
    await at_version(edges, env, changed, 15)
    for edge in edges:
        assert edge.sample("crivline_syncd_wakeups_total", source="bus", fate="queued") >= 1
        assert edge.sample("crivline_syncd_snapshot_reads_total", source="primary") == 0
    assert relay.counts["published"] >= 1

    database = database_url.rpartition("/")[2]
    assert await backends(database_url, database, "crivline-syncd") == 0
    assert await backends(standby.url, database, "crivline-syncd") >= 1  # the query sees them
    assert await backends(database_url, database, "crivline-relay") == 1


@dataclass
class SilentBus:
    """A TCP server that accepts and never answers: a bus publish to it hangs."""

    server: asyncio.Server | None = None
    port: int = 0
    peers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def __aenter__(self) -> SilentBus:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.peers.append(writer)
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass

        self.server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        for writer in self.peers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


async def test_a_change_committed_as_control_dies_reaches_every_edge_through_the_relay(
    db: asyncpg.Connection,
    database_url: str,
    standby_url: str,
    relay: Relay,
    start_edge: StartEdge,
    tmp_path: Path,
) -> None:
    tenant = await create_tenant(db, "acme", plan="enterprise")
    port = free_port()
    async with SilentBus() as silent:
        control = spawn_control(database_url, silent.port, port, tmp_path / "control.log")
        headers = {"Authorization": f"Bearer {tenant.token}"}
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            async with aiohttp.ClientSession(headers=headers) as http:

                async def ready() -> bool:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                        return answer.status == 200

                await wait_for(ready_or_dead(ready, control), 30, "control ready")

                async def ok(method: str, path: str, body: object) -> dict[str, object]:
                    async with http.request(method, api + path, json=body) as answer:
                        assert answer.status in (200, 201), await answer.text()
                        doc: dict[str, object] = await answer.json()
                        return doc

                await ok("POST", "/projects", {"key": "shop"})
                created = await ok("POST", "/projects/shop/environments", {"key": "prod"})
                env = str(created["id"])
                flag = {"key": "checkout", "type": "boolean", "defaultVariant": "off",
                        "variants": {"on": True, "off": False}}  # fmt: skip
                await ok("POST", "/projects/shop/flags", flag)
                version = int(
                    await db.fetchval("SELECT version FROM environments WHERE id=$1", env)
                )
                await standby_at(standby_url, env, version)
                edges = [await start_edge(n) for n in (1, 2, 3)]
                await at_version(edges, env, version, 10)

                woken = [e.sample(BUS_QUEUED, source="bus", fate="queued") for e in edges]
                answer = await ok(
                    "PUT",
                    "/projects/shop/flags/checkout/environments/prod",
                    {"state": "ENABLED", "defaultVariant": "on"},
                )
                control.kill()  # committed and acknowledged; its bus publish is still hanging
                committed = int(str(answer["environmentVersion"]))
        finally:
            control.kill()
            control.wait(10)
        assert committed > version
        await at_version(edges, env, committed, 15)
    # The bus carried it (and only the relay could have sent it); reconciliation never
    # found this environment behind.
    for edge, before in zip(edges, woken, strict=True):
        assert edge.sample(BUS_QUEUED, source="bus", fate="queued") > before
        assert edge.sample(RESYNCS) == 0


def spawn_control(
    database_url: str, bus_port: int, port: int, log: Path
) -> subprocess.Popen[bytes]:
    """``crivline control`` in a process of its own (to be SIGKILLed), its bus at ``bus_port``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    environ.update(
        CRIVLINE_DATABASE_URL=database_url,
        CRIVLINE_BUS_URL=f"redis://127.0.0.1:{bus_port}/0",
        CRIVLINE_CONTROL_PORT=str(port),
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crivline", "control"],
            env=environ, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip


def ready_or_dead(
    ready: Callable[[], Awaitable[T]], proc: subprocess.Popen[bytes]
) -> Callable[[], Awaitable[T | None]]:
    async def check() -> T | None:
        assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
        try:
            return await ready()
        except aiohttp.ClientError:
            return None

    return check


@dataclass
class Watch:
    """Every version each edge's Redis showed for one environment, polled until stopped."""

    edges: list[Edge]
    env: str
    seen: list[list[int]] = field(default_factory=list)

    async def run(self) -> None:
        self.seen = [[] for _ in self.edges]
        while True:
            for edge, seen in zip(self.edges, self.seen, strict=True):
                version = await edge.store.version(self.env)
                if not seen or seen[-1] != version:
                    seen.append(version)
            await asyncio.sleep(0.005)

    def assert_monotonic(self) -> None:
        for seen in self.seen:
            assert seen == sorted(seen), f"a version went backwards: {seen}"


@contextlib.asynccontextmanager
async def replay_paused(standby: PostgresStandby) -> AsyncIterator[None]:
    conn = await asyncpg.connect(standby.url)
    try:
        await conn.execute("SELECT pg_wal_replay_pause()")

        async def paused() -> bool:
            state = await conn.fetchval("SELECT pg_get_wal_replay_pause_state()")
            return bool(state == "paused")

        await wait_for(paused, 10, "replay to pause")
        yield
    finally:
        await conn.execute("SELECT pg_wal_replay_resume()")
        await conn.close()


async def test_a_lagging_standby_never_shows_an_older_version(
    db: asyncpg.Connection,
    standby_url: str,
    standby: PostgresStandby,
    relay: Relay,
    start_edge: StartEdge,
) -> None:
    project, env, version = await prepared(db, standby_url)
    # Reconciliation runs often here: it reads the same lagging standby, and must not
    # make things worse either.
    edges = [await start_edge(n, interval=0.3) for n in (1, 2)]
    await at_version(edges, env, version, 10)
    watch = Watch(edges, env)
    watching = asyncio.create_task(watch.run())
    try:
        async with replay_paused(standby):
            first = await set_default(db, project, "production", "checkout", "on")
            second = await set_default(db, project, "production", "checkout", "off")
            await wait_for(
                lambda: all(
                    e.sample("crivline_syncd_replica_lag_retries_total") > 0 for e in edges
                ),
                15,
                "every edge waiting for the standby to replay the bus's version",
            )
            for edge in edges:  # still what it had: nothing older, nothing half-replayed
                assert await edge.store.version(env) == version
        assert second == first + 1
        await at_version(edges, env, second, 15)
        await wait_for(
            lambda: all(seen[-1:] == [second] for seen in watch.seen), 10, "the watch to see it"
        )
    finally:
        await cancel_and_wait(watching)
    watch.assert_monotonic()
    for seen in watch.seen:
        assert seen[0] == version
        assert seen[-1] == second


async def test_a_standby_stuck_past_the_wait_leaves_the_change_to_reconciliation(
    db: asyncpg.Connection,
    standby_url: str,
    standby: PostgresStandby,
    relay: Relay,
    start_edge: StartEdge,
) -> None:
    project, env, version = await prepared(db, standby_url)
    edge = await start_edge(1, interval=0.3, standby_wait=0.3)
    await at_version([edge], env, version, 10)
    async with replay_paused(standby):
        changed = await set_default(db, project, "production", "checkout", "on")
        await wait_for(
            lambda: edge.sample("crivline_syncd_rebuilds_total", outcome="behind") > 0,
            15,
            "the wake-up to be given up",
        )
        assert await edge.store.version(env) == version
    await at_version([edge], env, changed, 15)  # the next reconciliation after the replay
    assert edge.daemon.health()["status"] == "ok"


@dataclass
class BusLog:
    """Every message on the bus channel, in order."""

    messages: list[tuple[str, int]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, client: aioredis.Redis) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(Keyspace().bus)
            self.subscribed.set()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    doc = orjson.loads(message["data"])
                    self.messages.append((doc["e"], doc["v"]))
        finally:
            await pubsub.aclose()

    def versions(self, env: str) -> list[int]:
        return [v for e, v in self.messages if e == env]


@pytest.fixture
async def bus_log(redis_url: str) -> AsyncIterator[BusLog]:
    client = aioredis.from_url(redis_url)
    log = BusLog()
    task = asyncio.create_task(log.follow(client))
    try:
        await asyncio.wait_for(log.subscribed.wait(), 5)
        yield log
    finally:
        await cancel_and_wait(task)
        await client.aclose()


async def test_relays_publish_each_version_once_and_catch_up_on_connect(
    db: asyncpg.Connection, database_url: str, redis_url: str, bus_log: BusLog
) -> None:
    project = await make_project(db, environments=("production",))
    await add_flag(db, project, "checkout")
    env = project.environments["production"]
    before = int(await db.fetchval("SELECT version FROM environments WHERE id = $1", env))

    bus = aioredis.from_url(redis_url)
    relays = [
        Relay(lambda: asyncpg.connect(database_url, timeout=5), bus, Keyspace(),
              sweep_interval=0.2, timeout=5.0)
        for _ in range(2)
    ]  # fmt: skip
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        # Committed before any relay listened: the sweep at connect publishes it.
        await wait_for(lambda: bus_log.versions(env)[-1:] == [before], 10, "the catch-up")
        last = before
        for n in range(6):
            last = await set_default(db, project, "production", "checkout", ("on", "off")[n % 2])
        await wait_for(lambda: bus_log.versions(env)[-1:] == [last], 10, "the last version")
        await wait_for(lambda: all(r.counts["sweeps"] >= 3 for r in relays), 10, "more sweeps")
    finally:
        await cancel_and_wait(*tasks)
        await bus.aclose()
    seen = bus_log.versions(env)
    assert seen == sorted(set(seen)), f"a version twice or out of order: {seen}"
    assert seen[0] == before
    assert sum(r.counts["published"] for r in relays) == len(bus_log.messages)


def spawn_relay(database_url: str, bus_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    environ.update(
        CRIVLINE_DATABASE_URL=database_url,
        CRIVLINE_BUS_URL=bus_url,
        CRIVLINE_RELAY_PORT=str(port),
        CRIVLINE_RECONCILE_INTERVAL="0.5",
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crivline", "relay"],
            env=environ, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
        )  # fmt: skip


async def test_crivline_relay_reports_ready_and_stops_on_sigterm(
    db: asyncpg.Connection, database_url: str, redis_url: str, bus_log: BusLog, tmp_path: Path
) -> None:
    project = await make_project(db, environments=("production",))
    env = project.environments["production"]
    port = free_port()
    relay = spawn_relay(database_url, redis_url, port, tmp_path / "relay.log")
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> dict[str, object] | None:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                    body: dict[str, object] = await answer.json()
                    return body if answer.status == 200 else None

            body = await wait_for(ready_or_dead(ready, relay), 30, "the relay ready")
            assert body["listening"] is True
            await wait_for(lambda: bus_log.versions(env), 10, "the sweep's message")
            async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                page = await answer.text()
            assert 'crivline_relay_messages_total{fate="published"}' in page
            relay.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(relay.wait, 15) == 0
    finally:
        relay.kill()
        relay.wait(10)
    assert b"Traceback" not in (tmp_path / "relay.log").read_bytes()
