"""syncd under faults: Redis flushed or killed, Postgres stopped mid-burst, two syncd racing.

Every test asserts on every version it observes: nothing in Redis ever goes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import orjson
import redis.asyncio as aioredis
from syncd_testkit import (
    INTERVAL,
    Announcements,
    Project,
    StartSyncd,
    add_flag,
    add_key,
    central,
    edge,
    make_project,
    wait_for,
)

from crivline.edge_store import EdgeStore, apply_delta
from crivline.embedded import PostgresServer, ValkeyServer
from crivline.keyspace import Keyspace
from crivline.snapshot import set_json_codecs


@dataclass
class Observer:
    """Polls the edge Redis and records (version, flag set) per environment as seen."""

    environments: list[str]
    seen: dict[str, list[int]] = field(default_factory=dict)
    flag_sets: dict[tuple[str, int], bytes] = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    stopped: bool = False

    async def run(self, redis_url: str) -> None:
        keys = Keyspace()
        client = aioredis.from_url(redis_url, socket_timeout=2)
        try:
            # A flag as well as cancellation: redis-py's wait_for (Python 3.11) can lose
            # a cancellation that races a reply.
            while not self.stopped:
                for env in self.environments:
                    try:
                        version, flag_set = await client.hmget(
                            keys.environment(env), ["version", "flagset"]
                        )
                    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
                        await asyncio.sleep(0.02)
                        continue
                    if version is None:
                        continue  # a flushed Redis is empty, not older
                    number = int(version)
                    history = self.seen.setdefault(env, [])
                    if history and number < history[-1]:
                        self.regressions.append(f"{env}: {history[-1]} -> {number}")
                    if not history or number != history[-1]:
                        history.append(number)
                    self.flag_sets.setdefault((env, number), flag_set)
                await asyncio.sleep(0.002)
        finally:
            await client.aclose()


@contextlib.asynccontextmanager
async def observing(environments: list[str], redis_url: str) -> AsyncIterator[Observer]:
    observer = Observer(environments)
    task = asyncio.create_task(observer.run(redis_url))
    try:
        yield observer
    finally:
        observer.stopped = True
        task.cancel()
        await asyncio.wait({task})
    assert observer.regressions == []


def monotonic(announcements: Announcements, env: str, *, since: int = 0) -> None:
    versions = announcements.versions(env)[since:]
    assert versions == sorted(versions), f"announced versions went back: {versions}"


async def converged(db: asyncpg.Connection, store: EdgeStore, project: Project) -> bool:
    try:
        for env in project.environments.values():
            if await edge(store, env) != await central(db, env):
                return False
    except (aioredis.ConnectionError, aioredis.TimeoutError):
        return False  # Redis is coming back
    return True


async def test_flushall_is_rebuilt_and_reannounced(
    db: asyncpg.Connection,
    start_syncd: StartSyncd,
    redis: aioredis.Redis,
    announcements: Announcements,
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    await add_key(db, project, "production")
    syncd = await start_syncd()
    epoch = syncd.daemon.reconciler.epoch
    counts = {env: len(announcements.of(env)) for env in project.environments.values()}
    await redis.flushall()
    await wait_for(lambda: converged(db, syncd.store, project), INTERVAL + 2, "the rebuild")
    state = await wait_for(syncd.store.sync_state, 2, "a sync state")
    await wait_for(lambda: syncd.daemon.readiness()["ready"], 2, "readiness again")
    assert syncd.daemon.reconciler.epoch not in (None, epoch)
    assert (await syncd.store.sync_state()).epoch == syncd.daemon.reconciler.epoch != epoch
    assert state is not None
    for env in project.environments.values():
        again = announcements.of(env)[counts[env] :]
        assert again, "a rebuilt environment is announced again"
        assert again[-1]["v"] == (await central(db, env)).version  # type: ignore[union-attr]
    assert syncd.sample("crivline_syncd_redis_data_lost_total") >= 1
    assert syncd.sample("crivline_syncd_full_syncs_total", reason="redis_lost_data") == 1
    # The rebuilt delta log starts over: stream clients get a full flag set.
    env = project.environments["production"]
    log = await syncd.store.delta_log(env)
    assert log[0].base == 0


async def test_valkey_killed_and_restarted_heals_unaided(
    db: asyncpg.Connection,
    start_syncd: StartSyncd,
    valkey: ValkeyServer,
    announcements: Announcements,
) -> None:
    project = await make_project(db)
    await add_flag(db, project, "checkout")
    # Restart Valkey just after a reconciliation pass, while syncd is idle: our own
    # subscriber is back long before syncd's next look, so it must hear the rebuild.
    interval = 2.0
    syncd = await start_syncd(interval=interval, heartbeat_ttl=60)
    epoch = syncd.daemon.reconciler.epoch
    before = {env: len(announcements.of(env)) for env in project.environments.values()}
    subscriptions = len(announcements.subscribed_at)
    passes = syncd.sample("crivline_syncd_reconciliations_total", result="ok")
    await wait_for(
        lambda: syncd.sample("crivline_syncd_reconciliations_total", result="ok") > passes,
        interval + 2,
        "a reconciliation pass",
    )
    valkey.kill()
    valkey.start()
    restarted = time.monotonic()
    await wait_for(
        lambda: len(announcements.subscribed_at) > subscriptions, 5, "our subscriber back"
    )
    await wait_for(lambda: converged(db, syncd.store, project), interval + 3, "the rebuild")
    healed = time.monotonic() - restarted
    await wait_for(lambda: syncd.daemon.readiness()["ready"], 5, "readiness again")
    assert syncd.daemon.reconciler.epoch != epoch
    assert (await syncd.store.sync_state()).epoch == syncd.daemon.reconciler.epoch
    back_at = announcements.subscribed_at[-1]
    for env in project.environments.values():
        stored = await syncd.store.read_environment(env)
        assert stored is not None
        assert back_at < stored.applied_at, "syncd rebuilt before our subscriber was back"
        assert (await syncd.store.delta_log(env))[0].base == 0  # rewritten from empty
        await wait_for(
            lambda env=env: len(announcements.of(env)) > before[env], 5, "the re-announcement"
        )
    print(f"healed {healed:.2f}s after the restart (reconcile interval {interval}s)")
    # And it keeps following.
    env = project.environments["production"]
    version = await db.fetchval("SELECT crivline_bump_environment($1)", env)
    await wait_for(lambda: _at(syncd.store, env, version), 5, "a change after the restart")
    await wait_for(lambda: version in announcements.versions(env), 5, "its announcement")


async def _at(store: EdgeStore, env: str, version: int) -> bool:
    return await store.version(env) >= version


async def test_postgres_stopped_during_a_burst_loses_nothing(
    db: asyncpg.Connection,
    database_url: str,
    start_syncd: StartSyncd,
    postgres: PostgresServer,
    redis_url: str,
    announcements: Announcements,
) -> None:
    project = await make_project(db, environments=("a", "b", "c"))
    await add_flag(db, project, "checkout")
    syncd = await start_syncd()
    envs = list(project.environments.values())
    committed: dict[str, int] = {}
    failed_writes = 0
    half_done = asyncio.Event()

    async def writer() -> None:
        nonlocal failed_writes
        conn: asyncpg.Connection | None = None
        for number in range(90):
            env = envs[number % len(envs)]
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(database_url, timeout=2)
                        await set_json_codecs(conn)
                    async with conn.transaction():
                        await conn.execute(
                            "UPDATE flag_environments SET default_variant = $2"
                            " WHERE environment_id = $1",
                            env,
                            "on" if number % 2 else "off",
                        )
                        version = await conn.fetchval("SELECT crivline_bump_environment($1)", env)
                    committed[env] = version
                    break
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,  # a connection that died mid-operation
                ):
                    failed_writes += 1  # not committed (or unknown): retried as a new write
                    conn = None
                    await asyncio.sleep(0.05)
            if number == 30:
                half_done.set()
        if conn is not None:
            await conn.close()

    async with observing(envs, redis_url) as observer:
        writing = asyncio.create_task(writer())
        await half_done.wait()
        await asyncio.to_thread(postgres.stop)
        await asyncio.to_thread(postgres.start)
        await writing
        await wait_for(lambda: syncd.daemon.readiness()["listening"], 10, "listening again")
        fresh = await asyncpg.connect(database_url)
        await set_json_codecs(fresh)
        try:
            await wait_for(
                lambda: converged(fresh, syncd.store, project), 10, "every committed change"
            )
            for env in envs:
                final = await central(fresh, env)
                assert final is not None
                assert final.version == committed[env]
        finally:
            await fresh.close()
    for env in envs:
        monotonic(announcements, env)
        assert observer.seen[env][-1] == committed[env]
    assert failed_writes > 0, "the writer never saw Postgres down: the fault was not injected"
    assert syncd.sample("crivline_syncd_reconnects_total", target="postgres_listen") >= 1


async def test_two_syncd_racing_on_one_redis_converge_without_regressing(
    db: asyncpg.Connection,
    database_url: str,
    start_syncd: StartSyncd,
    redis_url: str,
    announcements: Announcements,
) -> None:
    project = await make_project(db, environments=("a", "b", "c"))
    for key in ("one", "two", "three"):
        await add_flag(db, project, key)
    first = await start_syncd()
    second = await start_syncd()
    envs = list(project.environments.values())
    flags = ["one", "two", "three"]

    async def storm(worker: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for number in range(40):
                env = envs[(number + worker) % len(envs)]
                async with conn.transaction():
                    await conn.execute(
                        """UPDATE flag_environments fe SET default_variant = $3
                             FROM flags f WHERE f.id = fe.flag_id AND f.key = $2
                              AND fe.environment_id = $1""",
                        env,
                        flags[(number * 7 + worker) % len(flags)],
                        "on" if (number + worker) % 3 else "off",
                    )
                    await conn.execute("SELECT crivline_bump_environment($1)", env)
        finally:
            await conn.close()

    async def observed_current() -> bool:
        for env in envs:
            current = await central(db, env)
            if current is None or observer.seen.get(env, [None])[-1] != current.version:
                return False
        return True

    async with observing(envs, redis_url) as observer:
        await asyncio.gather(*(storm(worker) for worker in range(3)))
        await wait_for(lambda: converged(db, first.store, project), 10, "convergence")
        # The storm's chains may all be broken by the race or trimmed before the
        # observer (slow on a loaded machine) saw their base. One quiet change per
        # environment after both syncd settled gives every environment a chain from a
        # version the observer certainly saw; both syncd still race to apply it.
        await wait_for(observed_current, 10, "the observer seeing the converged versions")
        for env in envs:
            async with db.transaction():
                await db.execute(
                    """UPDATE flag_environments fe SET default_variant =
                           CASE fe.default_variant WHEN 'on' THEN 'off' ELSE 'on' END
                         FROM flags f WHERE f.id = fe.flag_id AND f.key = 'one'
                          AND fe.environment_id = $1""",
                    env,
                )
                await db.execute("SELECT crivline_bump_environment($1)", env)
        await wait_for(lambda: converged(db, first.store, project), 10, "the quiet change")
    for env in envs:
        monotonic(announcements, env)
        current = await first.store.read_environment(env)
        assert current is not None
        # Every delta chain the log offers, replayed from a version a client really saw,
        # lands exactly on the current flag set: a race breaks a chain, never corrupts it.
        replayed = 0
        for (seen_env, version), flag_set in observer.flag_sets.items():
            if seen_env != env or version == current.version:
                continue
            chain = await first.store.deltas_since(env, version)
            if chain is None:
                continue
            state = orjson.loads(flag_set)
            for entry in chain:
                state = apply_delta(state, entry.delta)
            assert orjson.dumps(state, option=orjson.OPT_SORT_KEYS) == current.flag_set_bytes
            replayed += 1
        assert replayed > 0
    applied = first.sample("crivline_syncd_versions_applied_total") + second.sample(
        "crivline_syncd_versions_applied_total"
    )
    print(
        f"two syncd applied {applied:.0f} versions; both did work: "
        f"{first.sample('crivline_syncd_versions_applied_total'):.0f}/"
        f"{second.sample('crivline_syncd_versions_applied_total'):.0f}"
    )
