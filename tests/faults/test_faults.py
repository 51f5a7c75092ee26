"""The multi-edge fault suite: a write storm, clients on every edge, one fault per test,
then all of them at random (``CRIVLINE_FAULT_SEED`` replays a run).

Every test: restart whatever an earlier test left dead; open a stream and a poller per
environment on every edge; start the storm; inject the fault while it runs; heal it;
stop writing. Besides the clients of each edge, a poller and a stream per environment
move between edges all along (``fault_clients``: an SDK after a DNS or load-balancer
change). Then, within the bound (reconciliation interval + 5 s) from the moment
the last fault was healed and the last write answered, every edge serves exactly the
central state, every stream client holds it, every revoked key is refused and every
live one accepted (:func:`fault_verify.converge`); every acknowledged version is in
every edge's delta log; and no client ever saw a version twice or go back — across
processes and across edges.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import zlib
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from fault_clients import Clients
from fault_cluster import BOUND, Cluster, wait_until
from fault_inject import (
    Timeline,
    bus_down,
    kill_part,
    notifications_lost,
    plan,
    postgres_kill,
    postgres_stop,
    run_plan,
    valkey_restart,
    watch,
)
from fault_storm import Storm
from fault_verify import (
    REPORT,
    Measurement,
    converge,
    delta_chain_problems,
    metric,
    scrape,
    syncd_never_ahead,
)

from crivline.keyspace import Keyspace

pytestmark = pytest.mark.timeout(150)

Inject = Callable[[Timeline], Awaitable[None]]


class Outcome:
    def __init__(self, storm: Storm, clients: Clients, timeline: Timeline, seconds: float):
        self.storm = storm
        self.clients = clients
        self.timeline = timeline
        self.seconds = seconds


async def scenario(
    cluster: Cluster,
    name: str,
    inject: Inject,
    *,
    seed: int | None = None,
    max_writes: int = 400,
    context: str = "",
) -> Outcome:
    """Storm + clients + ``inject``; converged within the bound, or an AssertionError."""
    await cluster.ensure_running()
    clients = Clients.for_cluster(cluster)
    storm = Storm(cluster, zlib.crc32(name.encode()) if seed is None else seed)
    timeline = watched = Timeline()
    watching = asyncio.Event()
    watcher = asyncio.create_task(watch(cluster, watched, watching))
    try:
        await clients.start()
        storm.start(max_writes)
        await storm.until_acks(15)
        timeline = Timeline(started=watched.started)
        await inject(timeline)
        await storm.until_acks(10)  # writes go through again after the faults
        await storm.finish()
        assert storm.stopped_at is not None
        quiet = max(timeline.healed_at, storm.stopped_at)
        try:
            seconds = await converge(cluster, storm, clients, quiet)
        except AssertionError as exc:
            events = "\n  ".join(sorted(timeline.events + watched.events))
            raise AssertionError(f"{context}\n{exc}\nfaults:\n  {events}") from None
    finally:
        await storm.finish()
        await clients.stop()
        watching.set()
        await watcher
    summary = f"{storm.summary()}; {clients.roaming()}"
    details = f"{context}\nfaults: {timeline.events}\nstorm: {summary}"
    violations = clients.violations()
    assert violations == [], "\n".join([details, *violations[:40]])
    assert clients.roamed(), f"a roaming client never moved between edges\n{details}"
    assert await delta_chain_problems(cluster, storm) == [], details
    assert await syncd_never_ahead(cluster) == [], details
    after_heal = quiet + seconds - timeline.healed_at
    REPORT.append(Measurement(name, seconds, BOUND, summary, timeline.events, after_heal))
    return Outcome(storm, clients, timeline, seconds)


# -- one fault per test -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_postgres_stopped_or_killed(cluster: Cluster, how: str) -> None:
    fault = postgres_stop if how == "stop" else postgres_kill

    async def inject(timeline: Timeline) -> None:
        await fault(cluster, timeline, 1.5)

    outcome = await scenario(cluster, f"postgres {how}", inject)
    # The fault was real: writes failed while Postgres was away, and none was lost.
    assert outcome.storm.unavailable(), outcome.storm.summary()


async def edge_epoch(cluster: Cluster, edge: str) -> bytes | None:
    client = aioredis.from_url(cluster.edge(edge).redis_url)
    try:
        epoch: bytes | None = await client.hget(
            Keyspace("crivline:", f"edge-{edge}").sync_state, "epoch"
        )
        return epoch
    finally:
        await client.aclose()


async def test_edge_valkey_killed_and_restarted_empty(cluster: Cluster) -> None:
    await cluster.ensure_running()
    before = await edge_epoch(cluster, "a")

    async def inject(timeline: Timeline) -> None:
        await valkey_restart("a")(cluster, timeline, 1.5)

    await scenario(cluster, "valkey a restarted empty", inject)
    # Syncd noticed the empty Redis and rebuilt it: a new epoch.
    after = await edge_epoch(cluster, "a")
    assert before is not None
    assert after is not None
    assert after != before


async def test_syncd_killed_mid_write(cluster: Cluster) -> None:
    async def inject(timeline: Timeline) -> None:
        # The only syncd of edge a, and one of the two at edge b, while writes land.
        await kill_part("syncd-b1")(cluster, timeline, 0.2)
        await kill_part("syncd-a1")(cluster, timeline, 1.5)

    starts = {p.name: p.starts for p in cluster.parts()}
    await scenario(cluster, "syncd killed", inject)
    assert cluster.edge("a").syncds[0].starts == starts["syncd-a1"] + 1


async def test_proxy_killed_with_streams_open(cluster: Cluster) -> None:
    edge = cluster.edge("a")
    victim = edge.proxies[0]
    moved: list[int] = []

    async def inject(timeline: Timeline) -> None:
        await kill_part(victim.name)(cluster, timeline, 1.5)

    outcome = await scenario(cluster, "proxy killed", inject)
    # Streams that lived on the killed process resumed on the other one, by Last-Event-ID.
    on_victim = [
        w
        for w in outcome.clients.watchers
        if w.edge == "a" and any(o.proxy == victim.name for o in w.observed)
    ]
    moved = [w.resumes for w in on_victim]
    assert on_victim
    assert all(moved), f"resumes of the streams on {victim.name}: {moved}"
    assert any(p.failovers for p in outcome.clients.pollers if p.edge == "a")


async def test_edge_restarted_cold_proxy_first(cluster: Cluster) -> None:
    """A whole edge down (Valkey, both syncd, its proxy), brought back in the worst order:
    an empty Valkey, the proxy, and only then syncd. Meanwhile clients keep asking the
    proxy with valid keys, which an empty edge Redis does not know yet."""
    edge = cluster.edge("b")
    proxy = edge.proxies[0]

    async def inject(timeline: Timeline) -> None:
        timeline.log("edge b: SIGKILL to valkey, syncd b1, b2 and proxy b1")
        await asyncio.gather(proxy.kill(), *(s.kill() for s in edge.syncds))
        await asyncio.to_thread(edge.valkey.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(edge.valkey.start)
        proxy.start()
        await wait_until(lambda: cluster.answers(proxy), 30, "proxy b1 to listen")
        timeline.log("edge b: valkey (empty) and proxy b1 up; syncd still down")
        await asyncio.sleep(1.0)  # clients meet a proxy whose edge knows nothing yet
        for syncd in edge.syncds:
            syncd.start()
        timeline.healed("edge b: syncd b1, b2 started")

    await scenario(cluster, "edge b cold, proxy first", inject)


async def test_notifications_lost(cluster: Cluster) -> None:
    async def inject(timeline: Timeline) -> None:
        await notifications_lost(cluster, timeline, 2.5)

    outcome = await scenario(cluster, "notifications lost", inject)
    assert outcome.timeline.listen_terminated >= 4, outcome.timeline.events


async def bus_failures(cluster: Cluster) -> float:
    text = await scrape(cluster, "control")
    return metric(text, "crivline_control_bus_messages_total", result="failed")


async def test_bus_unavailable(cluster: Cluster) -> None:
    before = await bus_failures(cluster)

    async def inject(timeline: Timeline) -> None:
        await bus_down(cluster, timeline, 2.0)

    outcome = await scenario(cluster, "bus unavailable", inject)
    after = await bus_failures(cluster)
    assert after > before, "control never failed to publish: the bus was not down"
    # A bus failure never fails a write.
    assert outcome.storm.unavailable() == 0, outcome.storm.summary()
    assert outcome.storm.refusals == [], outcome.storm.refusals


# -- all of them, at random -----------------------------------------------------------------


def _seed() -> int:
    raw = os.environ.get("CRIVLINE_FAULT_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1, 2**31)


async def _random_round(cluster: Cluster, seed: int, name: str) -> Outcome:
    planned = plan(cluster, seed)
    shown = ", ".join(f"{p.name}@{p.start}s/{p.down}s" for p in planned)
    context = f"randomised faults, replay with CRIVLINE_FAULT_SEED={seed}: {shown}"
    print(context)

    async def inject(timeline: Timeline) -> None:
        await run_plan(cluster, timeline, planned)

    return await scenario(cluster, name, inject, seed=seed, max_writes=800, context=context)


async def test_random_faults(cluster: Cluster) -> None:
    seed = _seed()
    await _random_round(cluster, seed, f"random (seed {seed})")


@pytest.mark.slow
@pytest.mark.timeout(0)
async def test_soak(cluster: Cluster) -> None:
    """Round after round of random faults for ``CRIVLINE_SOAK_SECONDS`` (manual runs)."""
    seconds = float(os.environ.get("CRIVLINE_SOAK_SECONDS") or 0)
    if seconds <= 0:
        pytest.skip("set CRIVLINE_SOAK_SECONDS to soak (random fault rounds for that long)")
    seed = _seed()
    end = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < end:
        await _random_round(cluster, seed + round_, f"soak round {round_} (seed {seed + round_})")
        round_ += 1
