"""The edge store on a real Valkey: the version guard, the delta chain, keys, removal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from support.waiting import eventually

from crivline.edge_store import EdgeStore, PlanWrite, apply_delta, compute_delta
from crivline.keyspace import Keyspace
from crivline.snapshot import EdgeKey, EnvironmentSnapshot

ENV = "00000000-0000-0000-0000-00000000000e"


def snapshot(
    version: int, flags: dict[str, Any], keys: tuple[EdgeKey, ...] = ()
) -> EnvironmentSnapshot:
    return EnvironmentSnapshot(
        environment_id=ENV,
        environment_key="production",
        project_id="00000000-0000-0000-0000-00000000000p",
        project_key="app",
        tenant_id="00000000-0000-0000-0000-00000000000t",
        tenant_key="acme",
        version=version,
        flag_set={"flags": flags, "metadata": {"flagSetId": "app/production"}},
        keys=keys,
    )


def flag(value: Any) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"a": value}, "defaultVariant": "a"}


@pytest.fixture
async def store(redis: aioredis.Redis) -> EdgeStore:
    return EdgeStore(redis, Keyspace("t:", "edge-1"))


async def write(store: EdgeStore, snap: EnvironmentSnapshot) -> bool:
    base, flag_set = await store.read_current(snap.environment_id)
    result = await store.apply(snap, base_version=base, base_flag_set=flag_set, committed_at=1.5)
    return result.applied


@pytest.fixture
async def announcements(redis_url: str) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe("t:changes")
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                queue.put_nowait(orjson.loads(message["data"]))

    task = asyncio.create_task(pump())
    try:
        yield queue
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await pubsub.aclose()
        await client.aclose()


async def test_apply_writes_everything_and_announces(
    store: EdgeStore, announcements: asyncio.Queue[dict[str, Any]]
) -> None:
    key = EdgeKey("ab" * 32, "key-1", "server", None)
    assert await write(store, snapshot(3, {"f": flag(True)}, (key,)))
    stored = await store.read_environment(ENV)
    assert stored is not None
    assert stored.version == 3
    assert stored.flag_set() == snapshot(3, {"f": flag(True)}).flag_set
    assert stored.flag_set_bytes == snapshot(3, {"f": flag(True)}).flag_set_bytes()
    assert (stored.tenant_key, stored.project_key, stored.environment_key) == (
        "acme", "app", "production",
    )  # fmt: skip
    assert stored.committed_at == 1.5
    assert await store.served() == {ENV}
    assert await store.environment_key_hashes(ENV) == {"ab" * 32}
    api_key = await store.read_api_key("ab" * 32)
    assert api_key is not None
    assert (api_key.environment_id, api_key.kind, api_key.id, api_key.expires_at) == (
        ENV, "server", "key-1", None,
    )  # fmt: skip
    message = await asyncio.wait_for(announcements.get(), 5)
    assert message == {"e": ENV, "v": 3, "at": 1.5, "keys": True}


async def test_guard_refuses_the_same_or_an_older_version(store: EdgeStore) -> None:
    assert await write(store, snapshot(5, {"f": flag("new")}))
    stale = snapshot(4, {"f": flag("old")})
    result = await store.apply(stale, base_version=0, base_flag_set=None, committed_at=1.0)
    assert not result.applied
    assert result.previous == 5
    again = await store.apply(snapshot(5, {}), base_version=0, base_flag_set=None, committed_at=1)
    assert not again.applied
    stored = await store.read_environment(ENV)
    assert stored is not None
    assert stored.version == 5
    assert stored.flag_set()["flags"] == {"f": flag("new")}
    assert len(await store.delta_log(ENV)) == 1


async def test_delta_chain_replays_to_the_current_flag_set(store: EdgeStore) -> None:
    versions = [
        {"a": flag(1), "b": flag("x")},
        {"a": flag(1.0), "b": flag("x")},  # 1 -> 1.0 is a change in JSON
        {"a": flag(True), "c": flag({"k": [1]})},
        {"a": flag(True), "c": flag({"k": [1]})},  # keys-only bump: an empty delta
    ]
    for number, flags in enumerate(versions, start=1):
        assert await write(store, snapshot(number, flags))
    log = await store.delta_log(ENV)
    assert [(e.version, e.base) for e in log] == [(1, 0), (2, 1), (3, 2), (4, 3)]
    assert log[1].delta["flags"] == {"a": flag(1.0)}
    assert log[2].delta["removed"] == ["b"]
    assert log[3].delta == {"flags": {}, "removed": [], "evaluators": {}, "removedEvaluators": []}
    resumed = await store.deltas_since(ENV, 1)
    assert resumed is not None
    assert [e.version for e in resumed] == [2, 3, 4]
    state = snapshot(1, versions[0]).flag_set
    for entry in resumed:
        state = apply_delta(state, entry.delta)
    assert (
        orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
        == snapshot(4, versions[3]).flag_set_bytes()
    )
    assert await store.deltas_since(ENV, 4) == []
    assert await store.deltas_since(ENV, 0) is not None  # from nothing: the first entry has base 0


async def test_the_flag_set_version_is_stored_and_a_resume_by_it_follows_the_log(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    """The hash and each log entry carry the flag set's version the snapshot read from
    Postgres; a resume from a flag set's version starts after the newest logged version
    that has it — also when that version was merged with later ones into one entry."""
    one, two = {"a": flag(1)}, {"a": flag(2)}
    writes = [(1, 1, one), (3, 2, two), (4, 2, two), (5, 5, {**two, "b": flag(3)})]
    for version, flags_version, flags in writes:
        assert await write(store, replace(snapshot(version, flags), flags_version=flags_version))
    held = await redis.hget(store.keyspace.environment(ENV), "flags_version")
    assert held == b"5"
    log = await store.delta_log(ENV)
    assert [(e.base, e.version, e.flags_version) for e in log] == [
        (0, 1, 1), (1, 3, 2), (3, 4, 2), (4, 5, 5),
    ]  # fmt: skip
    from_two = await store.deltas_since(ENV, 2, flags=True)
    assert from_two is not None
    assert [e.version for e in from_two] == [5]  # after 4, the newest version with 2
    from_one = await store.deltas_since(ENV, 1, flags=True)
    assert from_one is not None
    assert [e.version for e in from_one] == [3, 4, 5]
    assert await store.deltas_since(ENV, 5, flags=True) == []
    assert await store.deltas_since(ENV, 3, flags=True) is None  # never a flag set here
    # By replication version, 2 is no version this edge held: no chain from it.
    assert await store.deltas_since(ENV, 2) is None


async def test_a_racing_writer_breaks_the_chain_instead_of_sending_a_wrong_patch(
    store: EdgeStore,
) -> None:
    assert await write(store, snapshot(1, {"a": flag(1)}))
    # Writer A read version 1; writer B moves Redis to 2 before A writes 3.
    base, old = await store.read_current(ENV)
    assert await write(store, snapshot(2, {"a": flag(2)}))
    result = await store.apply(
        snapshot(3, {"a": flag(1), "b": flag(3)}), base_version=base, base_flag_set=old,
        committed_at=1.0,
    )  # fmt: skip
    assert result.applied
    assert result.previous == 2
    log = await store.delta_log(ENV)
    assert [(e.version, e.base) for e in log] == [(1, 0), (2, 1), (3, 1)]
    assert await store.deltas_since(ENV, 2) is None  # resuming from 2 needs a full flag set
    assert await store.deltas_since(ENV, 1) is None  # 1 -> 2 -> 3 is not the chain either


async def test_revoked_keys_disappear_and_are_announced(
    store: EdgeStore, announcements: asyncio.Queue[dict[str, Any]]
) -> None:
    k1, k2 = EdgeKey("01" * 32, "k1", "server", None), EdgeKey("02" * 32, "k2", "client", None)
    assert await write(store, snapshot(1, {}, (k1, k2)))
    assert await write(store, snapshot(2, {"f": flag(1)}, (k1, k2)))
    assert await write(store, snapshot(3, {"f": flag(1)}, (k2,)))
    assert await store.read_api_key("01" * 32) is None
    assert await store.read_api_key("02" * 32) is not None
    assert await store.environment_key_hashes(ENV) == {"02" * 32}
    seen = [await asyncio.wait_for(announcements.get(), 5) for _ in range(3)]
    assert [(m["v"], m["keys"]) for m in seen] == [(1, True), (2, False), (3, True)]


async def test_expiring_keys_carry_their_expiry_and_a_ttl(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    key = EdgeKey("03" * 32, "k3", "server", 4102444800.0)  # 2100-01-01
    assert await write(store, snapshot(1, {}, (key,)))
    stored = await store.read_api_key("03" * 32)
    assert stored is not None
    assert stored.expires_at == 4102444800.0
    assert await redis.pexpiretime("t:key:" + "03" * 32) == 4102444800000


async def test_a_live_keys_record_is_rewritten_in_place_never_deleted(
    store: EdgeStore, redis: aioredis.Redis, redis_url: str
) -> None:
    """Each version rewrites the records of the live keys. A DEL before the HSET would
    leave a moment in which a proxy reads a live key as unknown (a 401 to a valid key):
    Valkey's keyspace events show every command that touched the record."""
    key = EdgeKey("04" * 32, "k4", "server", 4102444800.0)
    name = store.keyspace.api_key(key.key_hash)
    await redis.config_set("notify-keyspace-events", "Kgh")
    listener = aioredis.from_url(redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(f"__keyspace@0__:{name}")
        events: list[str] = []

        async def drain() -> bool:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                events.append(message["data"].decode())
            return events.count("hset") >= 3

        assert await write(store, snapshot(1, {}, (key,)))
        lifted = EdgeKey(key.key_hash, key.id, key.kind, None)  # its expiry lifted
        assert await write(store, snapshot(2, {"f": flag(1)}, (lifted,)))
        assert await write(store, snapshot(3, {"f": flag(2)}, (lifted,)))
        await eventually(drain, within=5, what="three rewrites of the key's record")
        assert "del" not in events, events
        assert await redis.pttl(name) == -1  # no expiry left behind
        assert await store.read_api_key(key.key_hash) is not None
    finally:
        await redis.config_set("notify-keyspace-events", "")
        await pubsub.aclose()
        await listener.aclose()


async def test_remove_forgets_the_environment_and_announces_it(
    store: EdgeStore, redis: aioredis.Redis, announcements: asyncio.Queue[dict[str, Any]]
) -> None:
    key = EdgeKey("04" * 32, "k4", "server", None)
    assert await write(store, snapshot(2, {"f": flag(1)}, (key,)))
    assert await store.remove(ENV)
    assert await store.read_environment(ENV) is None
    assert await store.read_api_key("04" * 32) is None
    assert await store.served() == set()
    assert await redis.keys("t:env:*") == []
    assert not await store.remove(ENV)  # nothing left: nothing announced
    seen = [await asyncio.wait_for(announcements.get(), 5) for _ in range(2)]
    assert seen[1] == {"e": ENV, "v": 0, "removed": True}
    assert announcements.empty()


async def test_full_sync_epoch_survives_restarts_but_not_a_flush(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    marker = await store.begin_full_sync()
    epoch = await store.finish_full_sync(marker)
    assert epoch
    state = await store.sync_state()
    assert state.epoch == epoch
    assert state.full_sync_at is not None
    # A second full sync (a syncd restart) keeps the epoch.
    assert await store.finish_full_sync(await store.begin_full_sync()) == epoch
    assert await store.touch_reconciled(epoch, now=123.0)
    assert (await store.sync_state()).reconciled_at == 123.0
    # Redis loses its data while a full sync runs: the sync is not complete.
    marker = await store.begin_full_sync()
    await redis.flushall()
    assert await store.finish_full_sync(marker) is None
    assert not await store.touch_reconciled(epoch)
    assert await store.sync_state() == type(state)(None, None, None)


async def test_scripts_survive_a_script_cache_flush(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    assert await write(store, snapshot(1, {}))
    await redis.script_flush()
    assert await write(store, snapshot(2, {"f": flag(1)}))


def test_compute_delta_treats_metadata_and_evaluators() -> None:
    old = {"flags": {}, "$evaluators": {"s": {"in": [1, [1]]}}, "metadata": {"flagSetId": "a"}}
    new = {"flags": {"f": flag(1)}, "metadata": {"flagSetId": "b"}}
    delta = compute_delta(old, new)
    assert delta["removedEvaluators"] == ["s"]
    assert delta["metadata"] == {"flagSetId": "b"}
    assert apply_delta(old, delta) == new
    assert "metadata" not in compute_delta(None, new)


async def test_a_reconciliation_records_the_environments_it_found_behind(store: EdgeStore) -> None:
    epoch = await store.finish_full_sync(await store.begin_full_sync())
    assert epoch
    started = await store.clock()
    assert await store.touch_reconciled(epoch, behind=["e2", "e1"], started=started)
    state = await store.sync_state()
    assert state.reconciled_behind == {"e1", "e2"}
    assert state.reconciled_started == started
    assert state.behind_at_reconciliation("e1")
    assert not state.behind_at_reconciliation("e3")
    # Too many to list: recorded as all of them.
    assert await store.touch_reconciled(epoch, behind=[f"e{i}" for i in range(101)])
    assert (await store.sync_state()).behind_at_reconciliation("e3")
    # A full sync leaves nothing behind, and no reconciliation to go by.
    assert await store.finish_full_sync(await store.begin_full_sync()) == epoch
    state = await store.sync_state()
    assert state.reconciled_behind == frozenset()
    assert state.reconciled_started is None


async def test_a_strict_base_is_written_only_while_redis_holds_it(store: EdgeStore) -> None:
    assert await write(store, snapshot(1, {"a": flag(1)}))
    remembered = snapshot(1, {"a": flag(1)}).flag_set
    assert await write(store, snapshot(2, {"a": flag(2)}))  # another writer moves Redis on
    result = await store.apply(
        snapshot(3, {"a": flag(3)}), base_version=1, base_flag_set=remembered,
        committed_at=1.0, strict_base=True,
    )  # fmt: skip
    assert not result.applied
    assert result.base_moved
    assert result.previous == 2
    assert [e.version for e in await store.delta_log(ENV)] == [1, 2]  # nothing written
    base, held = await store.read_current(ENV)
    result = await store.apply(
        snapshot(3, {"a": flag(3)}), base_version=base, base_flag_set=held,
        committed_at=1.0, strict_base=True,
    )  # fmt: skip
    assert result.applied
    assert await store.deltas_since(ENV, 1) is not None  # 1 -> 2 -> 3 is one chain
    with pytest.raises(ValueError, match="strict base"):
        await store.apply(
            snapshot(4, {}), base_version=3, base_flag_set=None, committed_at=1.0,
            key_records=False,
        )  # fmt: skip


async def test_the_plan_goes_in_before_the_environment_and_never_back(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    tenant = snapshot(1, {}).tenant_id
    plan = PlanWrite(tenant, 20, b"20|{}")
    result = await store.apply(snapshot(1, {}), base_version=0, base_flag_set=None,
                               committed_at=1.0, plan=plan)  # fmt: skip
    assert result.applied
    assert await redis.hget(store.keyspace.plans, tenant) == b"20|{}"
    # An older revision never replaces it, even with a newer version of the environment;
    # a plan is written even when the environment's version is not.
    older = PlanWrite(tenant, 10, b"10|{}")
    assert (await store.apply(snapshot(2, {}), base_version=1, base_flag_set={},
                              committed_at=1.0, plan=older)).applied  # fmt: skip
    assert await redis.hget(store.keyspace.plans, tenant) == b"20|{}"
    newer = PlanWrite(tenant, 30, b"30|{}")
    await redis.script_flush()  # and after a restart's empty script cache
    assert not (await store.apply(snapshot(2, {}), base_version=2, base_flag_set={},
                                  committed_at=1.0, plan=newer)).applied  # fmt: skip
    assert await redis.hget(store.keyspace.plans, tenant) == b"30|{}"


async def test_key_records_left_alone_only_on_request(
    store: EdgeStore, redis: aioredis.Redis
) -> None:
    key = EdgeKey("05" * 32, "k5", "server", None)
    assert await write(store, snapshot(1, {}, (key,)))
    await redis.hset(store.keyspace.api_key(key.key_hash), "kind", "changed-by-hand")
    result = await store.apply(
        snapshot(2, {}, (key,)), base_version=1, base_flag_set=snapshot(1, {}).flag_set,
        committed_at=1.0, strict_base=True, key_records=False,
    )  # fmt: skip
    assert result.applied
    stored = await store.read_api_key(key.key_hash)
    assert stored is not None
    assert stored.kind == "changed-by-hand"  # not rewritten
    assert await store.environment_key_hashes(ENV) == {key.key_hash}
    assert await write(store, snapshot(3, {}, (key,)))  # the default rewrites them
    stored = await store.read_api_key(key.key_hash)
    assert stored is not None
    assert stored.kind == "server"
