"""The edge on highly available Valkey: a 3-master/3-replica Cluster and a Sentinel group.

The whole edge (control, syncd, two proxies, the storm's clients) runs on each. A master
is SIGKILLed in the middle of the write storm; after the failover, within the fault
suite's bound (reconcile interval + 5 s, counted from the moment the failover completed
and the last write was answered), every acknowledged write is at every proxy and every
stream client, and no stream saw a version twice or go back
(:func:`test_faults.scenario` checks all of it). Replication is asynchronous, so the
promoted replica may lack the last writes: syncd's reconciliation finds the versions
behind Postgres and rewrites them, and the proxies, answering from memory, never go back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fault_cluster import BOUND, Cluster, build, wait_until
from fault_inject import Timeline
from fault_verify import _get, metric, scrape
from support.valkeyha import Node, SentinelGroup, ValkeyCluster
from test_faults import scenario

from crivline.keyspace import Keyspace

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
async def on_cluster(work_dir: Path) -> AsyncIterator[tuple[Cluster, ValkeyCluster]]:
    root = work_dir / "ha-cluster"
    valkeys = await asyncio.to_thread(ValkeyCluster.create, root / "valkey")
    try:
        # The bus on the same cluster: control SPUBLISHes, syncd SSUBSCRIBEs.
        built = await build(root, edge_redis=valkeys, bus_redis=valkeys)
    except BaseException:
        await asyncio.to_thread(valkeys.stop)
        raise
    try:
        yield built, valkeys
    finally:
        await built.close()


@pytest.fixture(scope="module")
async def on_sentinel(
    work_dir: Path,
) -> AsyncIterator[tuple[Cluster, SentinelGroup, SentinelGroup]]:
    root = work_dir / "ha-sentinel"
    edge = await asyncio.to_thread(SentinelGroup.create, root / "edge", "edge")
    bus = await asyncio.to_thread(SentinelGroup.create, root / "bus", "bus")
    try:
        built = await build(root, edge_redis=edge, bus_redis=bus)
    except BaseException:
        await asyncio.to_thread(edge.stop)
        await asyncio.to_thread(bus.stop)
        raise
    try:
        yield built, edge, bus
    finally:
        await built.close()


async def test_cluster_master_killed_mid_storm(
    on_cluster: tuple[Cluster, ValkeyCluster],
) -> None:
    cluster, valkeys = on_cluster
    # The master holding the first environment (its hash slot has every key of it).
    env = cluster.environment_ids()[0]
    slot_key = Keyspace("crivline:", "edge-a").environment(env)

    async def inject(timeline: Timeline) -> None:
        victim = await asyncio.to_thread(valkeys.master_of, slot_key)
        timeline.log(f"valkey cluster: SIGKILL to master {victim.port} (holds {env})")
        killed = time.monotonic()
        await asyncio.to_thread(victim.kill)

        def promoted() -> Node | None:
            try:
                node = valkeys.master_of(slot_key)
            except RuntimeError:
                return None  # the slot has no master yet
            return node if node is not victim and node.running() else None

        successor = await wait_until(lambda: asyncio.to_thread(promoted), 30, "a replica promoted")
        took = time.monotonic() - killed
        print(f"cluster failover: a replica promoted {took:.2f}s after the SIGKILL")
        timeline.healed(f"valkey cluster: {successor.port} is the master after {took:.2f}s")

    outcome = await scenario(cluster, "cluster master killed", inject)
    assert outcome.storm.acks, outcome.storm.summary()
    # The sharded bus carried the changes to syncd as well.
    syncd_metrics = await scrape(cluster, cluster.edges[0].syncds[0].name)
    assert metric(syncd_metrics, "crivline_syncd_wakeups_total", source="bus") > 0
    control_metrics = await scrape(cluster, "control")
    assert metric(control_metrics, "crivline_control_bus_messages_total", result="published") > 0


async def test_sentinel_failover_of_edge_and_bus_mid_storm(
    on_sentinel: tuple[Cluster, SentinelGroup, SentinelGroup],
) -> None:
    cluster, edge, bus = on_sentinel
    syncd = cluster.edges[0].syncds[0]
    counts: dict[str, float] = {}

    async def bus_counts() -> tuple[float, float]:
        published = metric(
            await scrape(cluster, "control"),
            "crivline_control_bus_messages_total",
            result="published",
        )
        woken = metric(
            await scrape(cluster, syncd.name), "crivline_syncd_wakeups_total", source="bus"
        )
        return published, woken

    async def inject(timeline: Timeline) -> None:
        victims = [await asyncio.to_thread(g.current_master) for g in (edge, bus)]
        timeline.log(f"sentinel: SIGKILL to the edge master {victims[0].port}")
        timeline.log(f"sentinel: SIGKILL to the bus master {victims[1].port}")
        killed = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(v.kill) for v in victims))

        async def promoted() -> bool:
            masters = [await asyncio.to_thread(g.current_master) for g in (edge, bus)]
            return all(m is not v for m, v in zip(masters, victims, strict=True))

        await wait_until(promoted, 30, "the Sentinels to promote both replicas")
        took = time.monotonic() - killed
        print(f"sentinel failover: both replicas promoted {took:.2f}s after the SIGKILL")
        counts["published"], counts["woken"] = await bus_counts()
        timeline.healed(f"sentinel: both replicas promoted after {took:.2f}s")

        async def woken_again() -> bool:
            return (await bus_counts())[1] > counts["woken"]

        # The storm goes on: syncd resubscribes on the bus's new master (its reconnect
        # backoff, longer on a loaded machine) and is woken by control's next publish.
        await wait_until(woken_again, 20, "syncd woken by the bus's new master")

    outcome = await scenario(cluster, "sentinel failover (edge and bus)", inject)
    assert outcome.storm.acks, outcome.storm.summary()
    # The bus followed its failover too: control published on the new master, and syncd,
    # resubscribed there, was woken by it.
    published, woken = await bus_counts()
    assert published > counts["published"], (published, counts)
    assert woken > counts["woken"], (woken, counts)


async def test_a_promoted_replica_missing_the_last_writes_is_rewritten(
    on_sentinel: tuple[Cluster, SentinelGroup, SentinelGroup],
) -> None:
    """The replica is frozen (SIGSTOP) and cut off while writes land on the master, so it
    lacks them for certain; then the master dies and the Sentinels promote it. syncd
    notices the versions behind Postgres and rewrites them; no proxy ever answers an
    older version."""
    cluster, edge, _bus = on_sentinel
    await cluster.ensure_running()
    await asyncio.to_thread(edge.wait_replicated)
    tenant = cluster.tenants[0]
    env_key, env = next(iter(tenant.environments.items()))
    key = tenant.stream_keys[env]
    proxies = cluster.edges[0].proxies
    highest: dict[str, int] = {}
    went_back: list[str] = []

    async def served() -> list[int]:
        versions = []
        for proxy in proxies:
            _status, _body, header = await _get(cluster.session, proxy.url + "/sdk/v1/flags", key)
            if header is None:
                continue
            version = int(header)
            if version < highest.get(proxy.name, 0):
                went_back.append(f"{proxy.name}: {version} after {highest[proxy.name]}")
            highest[proxy.name] = max(version, highest.get(proxy.name, 0))
            versions.append(version)
        return versions

    master = await asyncio.to_thread(edge.current_master)
    replica = next(n for n in edge.data_nodes() if n is not master)
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    # Cut the frozen replica's link too: what the master sent before it died would
    # otherwise wait in the replica's socket and be applied when it wakes up.
    to_master = master.client()
    try:
        assert await to_master.client_kill_filter(_type="replica") == 1
    finally:
        await to_master.aclose()
    try:
        for n in range(5):
            answer = await cluster.api_ok(
                tenant,
                "PUT",
                f"/projects/{tenant.project}/flags/f0/environments/{env_key}",
                {"state": "ENABLED" if n % 2 else "DISABLED"},
            )
        final = int(answer["environmentVersion"])

        async def everywhere(version: int) -> bool:
            versions = await served()
            return len(versions) == len(proxies) and min(versions) >= version

        await wait_until(lambda: everywhere(final), 15, f"every proxy at version {final}")
        await asyncio.to_thread(master.kill)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    keys = Keyspace("crivline:", "edge-a")
    direct = replica.client()
    try:
        # Read what the replica holds now, while it is still a read-only replica of a dead
        # master: the Sentinels need down-after-milliseconds to act, and once they have
        # promoted it syncd may rewrite it before a poll of the promotion could look.
        behind = int(await direct.hget(keys.environment(env), "version") or 0)
        assert behind < final  # the replica really lacks the last writes

        async def promoted() -> bool:
            await served()  # the proxies are watched all along
            return await asyncio.to_thread(edge.current_master) is replica

        await wait_until(promoted, 30, "the Sentinels to promote the replica")
        promoted_at = time.monotonic()

        async def rewritten() -> bool:
            await served()
            return int(await direct.hget(keys.environment(env), "version") or 0) >= final

        await wait_until(rewritten, BOUND, f"syncd to rewrite version {final}")
        took = time.monotonic() - promoted_at
        print(f"promoted replica {final - behind} versions behind; rewritten {took:.2f}s later")
    finally:
        await direct.aclose()
    assert await everywhere(final)
    assert went_back == []
