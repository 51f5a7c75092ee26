"""The faults, each an async function that injects, waits, heals and logs what it did.

Every fault records on a :class:`Timeline` when it started and when it was healed (the
server or process started again — not "ready": recovering is the system's job, and the
bound starts counting here). Nothing blocks the event loop: server starts and stops run
in threads, so the storm and the clients carry on around the fault.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from fault_cluster import Cluster, Part

from syncd.clients import APPLICATION_NAME

LISTEN_APPLICATION = APPLICATION_NAME + "-listen"


@dataclass
class Timeline:
    events: list[str] = field(default_factory=list)
    healed_at: float = 0.0  # monotonic; the last heal
    started: float = field(default_factory=time.monotonic)
    listen_terminated: int = 0

    def log(self, text: str) -> None:
        self.events.append(f"+{time.monotonic() - self.started:6.2f}s {text}")

    def healed(self, text: str) -> None:
        self.healed_at = max(self.healed_at, time.monotonic())
        self.log(text)


async def watch(cluster: Cluster, timeline: Timeline, stop: asyncio.Event) -> None:
    """Log every process that dies or starts, planned or not (``watch:`` lines): a
    failure then shows whether something outside the plan took a server down."""
    seen = cluster.processes()
    while not stop.is_set():
        await asyncio.sleep(0.05)
        now = cluster.processes()
        for name, pid in now.items():
            if pid != seen.get(name):
                state = "down" if pid is None else f"up (pid {pid})"
                timeline.log(f"watch: {name} {state}")
        seen = now


Fault = Callable[[Cluster, Timeline, float], Awaitable[None]]


async def postgres_stop(cluster: Cluster, timeline: Timeline, down: float) -> None:
    """A clean (fast) shutdown of the central Postgres, then a start."""
    timeline.log("postgres: stop")
    await asyncio.to_thread(cluster.postgres.stop)
    await asyncio.sleep(down)
    await asyncio.to_thread(cluster.postgres.start)
    timeline.healed("postgres: started")


async def postgres_kill(cluster: Cluster, timeline: Timeline, down: float) -> None:
    """SIGKILL to every Postgres process; the restart runs crash recovery."""
    timeline.log("postgres: SIGKILL")
    await asyncio.to_thread(cluster.postgres.kill)
    await asyncio.sleep(down)
    await asyncio.to_thread(cluster.postgres.start)
    timeline.healed("postgres: started (crash recovery)")


def valkey_restart(edge_name: str) -> Fault:
    async def fault(cluster: Cluster, timeline: Timeline, down: float) -> None:
        valkey = cluster.edge(edge_name).valkey
        timeline.log(f"valkey {edge_name}: SIGKILL")
        await asyncio.to_thread(valkey.kill)
        await asyncio.sleep(down)
        await asyncio.to_thread(valkey.start)
        timeline.healed(f"valkey {edge_name}: started empty")

    fault.__name__ = f"valkey_{edge_name}_restart_empty"
    return fault


def _part(cluster: Cluster, name: str) -> Part:
    return next(p for p in cluster.parts() if p.name == name)


def kill_part(name: str) -> Fault:
    """SIGKILL a syncd or proxy process, restart it after ``down`` seconds."""

    async def fault(cluster: Cluster, timeline: Timeline, down: float) -> None:
        part = _part(cluster, name)
        timeline.log(f"{name}: SIGKILL")
        await part.kill()
        await asyncio.sleep(down)
        part.start()
        timeline.healed(f"{name}: started")

    fault.__name__ = f"kill_{name}"
    return fault


async def _terminate_listeners(cluster: Cluster) -> int:
    conn = await asyncpg.connect(cluster.postgres.url, timeout=2)
    try:
        rows = await conn.fetch(
            """SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
                WHERE application_name = $1 AND pid <> pg_backend_pid()""",
            LISTEN_APPLICATION,
        )
    finally:
        await conn.close()
    return sum(1 for r in rows if r["done"])


async def notifications_lost(cluster: Cluster, timeline: Timeline, duration: float) -> None:
    """Every syncd's LISTEN connection terminated, again and again, for ``duration``:
    every notification sent meanwhile is lost for good (found by application_name)."""
    timeline.log("listen: terminating every syncd LISTEN connection")
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            timeline.listen_terminated += await _terminate_listeners(cluster)
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # the connection broke mid-query (Postgres killed)
            TimeoutError,
        ):
            pass  # Postgres is down (another fault): nothing is listening anyway
        await asyncio.sleep(0.15)
    timeline.healed(f"listen: left alone ({timeline.listen_terminated} terminated)")


async def bus_down(cluster: Cluster, timeline: Timeline, down: float) -> None:
    timeline.log("bus: SIGKILL")
    await asyncio.to_thread(cluster.bus.kill)
    await asyncio.sleep(down)
    await asyncio.to_thread(cluster.bus.start)
    timeline.healed("bus: started")


def restart_sequence(edge_name: str) -> Fault:
    """The sequence that once left a proxy process ten versions behind its sibling: the
    edge's Valkey SIGKILLed and restarted empty while its syncd dies and comes back, and
    one of its proxy processes SIGKILLed just after Valkey returns — its clients fail
    over to the sibling that had to resync from the refilled Redis."""

    async def fault(cluster: Cluster, timeline: Timeline, down: float) -> None:
        edge = cluster.edge(edge_name)
        syncd, proxy = edge.syncds[0], edge.proxies[0]
        timeline.log(f"sequence {edge_name}: SIGKILL valkey {edge_name} and {syncd.name}")
        await asyncio.gather(asyncio.to_thread(edge.valkey.kill), syncd.kill())
        syncd.start()
        await asyncio.sleep(down)
        await asyncio.to_thread(edge.valkey.start)
        timeline.log(f"sequence {edge_name}: valkey {edge_name} started empty")
        await asyncio.sleep(0.3)
        timeline.log(f"sequence {edge_name}: SIGKILL {syncd.name} again and {proxy.name}")
        await asyncio.gather(syncd.kill(), proxy.kill())
        syncd.start()
        await asyncio.sleep(0.5)
        proxy.start()
        timeline.healed(f"sequence {edge_name}: {proxy.name} started")

    fault.__name__ = f"restart_sequence_{edge_name}"
    return fault


def catalogue(cluster: Cluster) -> dict[str, tuple[tuple[str, ...], Fault]]:
    """Every fault the randomised run may pick: name -> (targets, fault). Faults on one
    target never overlap; faults on different targets may."""
    faults: dict[str, tuple[tuple[str, ...], Fault]] = {
        "postgres_stop": (("postgres",), postgres_stop),
        "postgres_kill": (("postgres",), postgres_kill),
        "notifications_lost": (("listen",), notifications_lost),
        "bus_down": (("bus",), bus_down),
    }
    for edge in cluster.edges:
        faults[f"valkey_{edge.name}"] = ((f"valkey-{edge.name}",), valkey_restart(edge.name))
        for part in edge.syncds + edge.proxies:
            faults[f"kill_{part.name}"] = ((part.name,), kill_part(part.name))
        if len(edge.proxies) > 1:  # a sibling to fail over to
            targets = (f"valkey-{edge.name}", edge.syncds[0].name, edge.proxies[0].name)
            faults[f"sequence_{edge.name}"] = (targets, restart_sequence(edge.name))
    return faults


@dataclass(frozen=True)
class Planned:
    name: str
    targets: tuple[str, ...]
    start: float
    down: float


def plan(cluster: Cluster, seed: int, *, count: tuple[int, int] = (4, 7)) -> list[Planned]:
    """A random schedule of faults: which, when (seconds into the storm), for how long."""
    rng = random.Random(seed)
    options = catalogue(cluster)
    names = sorted(options)
    chosen = [rng.choice(names) for _ in range(rng.randint(*count))]
    busy_until: dict[str, float] = {}
    out = []
    for name in chosen:
        targets = options[name][0]
        start = rng.uniform(0.2, 4.0)
        start = max(start, *(busy_until.get(t, 0.0) + 0.3 for t in targets))
        down = rng.uniform(0.3, 2.0)
        for target in targets:
            extra = 6.0 if target == "postgres" else 2.0 if len(targets) > 1 else 1.0
            busy_until[target] = start + down + extra
        out.append(Planned(name, targets, round(start, 2), round(down, 2)))
    return sorted(out, key=lambda p: p.start)


async def run_plan(cluster: Cluster, timeline: Timeline, planned: list[Planned]) -> None:
    options = catalogue(cluster)
    # Faults sharing a target run one after the other, in one task (the plan spaced them).
    by_target: dict[str, list[Planned]] = {}
    for p in planned:
        home = next((t for t in p.targets if t in by_target), p.targets[0])
        by_target.setdefault(home, []).append(p)

    async def one_target(items: list[Planned]) -> None:
        for p in items:
            delay = timeline.started + p.start - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await options[p.name][1](cluster, timeline, p.down)

    await asyncio.gather(*(one_target(items) for items in by_target.values()))
