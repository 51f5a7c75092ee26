"""``make bench-fleet``: many bus-only edges fed by one primary, its standby, a relay and a bus.

What one run builds (all real processes from the embedded packages, on free ports):

- a central PostgreSQL (the primary) and a hot standby made from it with
  ``pg_basebackup``; ``crivline control`` (publishing on the bus) and ``crivline relay``
  (LISTEN on the primary → the bus), both on the primary;
- a bus (one Valkey);
- N edges, each a Valkey and a bus-only ``crivline syncd`` (``CRIVLINE_SYNCD_BUS_ONLY=on``,
  reading the standby); ``crivline proxy`` on the first few.

Then a tenant with a few environments and flags, and writes through the control API at a
steady rate for a fixed time. Measured:

- commit → each edge's Redis: for every write and every edge, the time from the commit
  (the ``at`` the bump carries) to the edge's announcement of that version or a newer one
  (announced by syncd in the same script that writes Redis); p50, p99, max — and how many
  (write, edge) pairs never arrived;
- connections held on the primary and on the standby, by application;
- queries on the standby per second (its committed transactions: reconciliations, version
  polls and snapshot reads), and reconciliation passes per second over all edges;
- bus messages per second (and distinct versions among them);
- resident memory per edge (syncd, Valkey, and the proxy where there is one).

Bounded: ``--duration`` seconds of writes (default 60) plus start-up. ``--smoke`` is the
few-edges, few-seconds version the test suite runs. The report goes to
``loadtests/results/fleet-<time>/`` (``report.md``, ``results.json``, logs) or ``--out``.
Figures taken on a shared, busy machine are marked as such in the report: read them as
orders of magnitude and as the shape of the scaling, not as this code's ceiling.

    .venv/bin/python loadtests/fleet.py                     # 20 edges, 60 s of writes
    .venv/bin/python loadtests/fleet.py --smoke             # 3 edges, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis
from benchstack import _reachable_temp, free_port, metrics, rss_bytes

from crivline.embedded import PostgresServer, PostgresStandby, ValkeyServer
from crivline.migrate import migrate
from crivline.seed import create_tenant
from crivline.snapshot import set_json_codecs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DATABASE = "crivline"
PREFIX = "crivline:"


@dataclass
class Part:
    """One ``crivline <command>`` process."""

    name: str
    command: str
    environ: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
        env = {**base, "PYTHONUNBUFFERED": "1", "CRIVLINE_LOG_LEVEL": "WARNING", **self.environ}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crivline", self.command],
                env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class Edge:
    name: str
    valkey: ValkeyServer
    syncd: Part
    proxy: Part | None = None
    # (environment, version) -> wall-clock time this edge announced it (or a newer one)
    arrived: dict[tuple[str, int], float] = field(default_factory=dict)
    highest: dict[str, int] = field(default_factory=dict)


@dataclass
class Fleet:
    root: Path
    edges_wanted: int
    proxies_wanted: int
    concurrency: int = 4
    primary: PostgresServer | None = None
    standby: PostgresStandby | None = None
    bus: ValkeyServer | None = None
    control: Part | None = None
    relay: Part | None = None
    edges: list[Edge] = field(default_factory=list)
    token: str = ""

    @property
    def database_url(self) -> str:
        assert self.primary is not None
        return self.primary.url_for(DATABASE)

    @property
    def standby_url(self) -> str:
        assert self.standby is not None
        return self.standby.url_for(DATABASE)

    def parts(self) -> Iterator[Part]:
        for part in (self.control, self.relay):
            if part is not None:
                yield part
        for edge in self.edges:
            yield edge.syncd
            if edge.proxy is not None:
                yield edge.proxy

    async def start(self, say: Any) -> None:
        self.primary = PostgresServer(self.root / "primary", durable=False)
        await asyncio.to_thread(self.primary.start, 60)
        admin = await asyncpg.connect(self.primary.url)
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.database_url)
        try:
            await set_json_codecs(conn)
            await migrate(conn)
            self.token = (await create_tenant(conn, "fleet", plan="enterprise")).token
        finally:
            await conn.close()
        say("primary up and migrated; pg_basebackup for the standby")
        self.standby = PostgresStandby(self.root / "standby", self.primary, durable=False)
        await asyncio.to_thread(self.standby.start, 60)
        self.bus = ValkeyServer(self.root / "bus")
        await asyncio.to_thread(self.bus.start)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        central = {"CRIVLINE_DATABASE_URL": self.database_url, "CRIVLINE_BUS_URL": self.bus.url}
        port = free_port()
        self.control = Part(
            "control", "control", {**central, "CRIVLINE_CONTROL_PORT": str(port)},
            logs / "control.log", port,
        )  # fmt: skip
        relay_port = free_port()
        self.relay = Part(
            "relay", "relay", {**central, "CRIVLINE_RELAY_PORT": str(relay_port)},
            logs / "relay.log", relay_port,
        )  # fmt: skip
        self.control.start()
        self.relay.start()
        for number in range(1, self.edges_wanted + 1):
            name = f"edge-{number:02d}"
            valkey = ValkeyServer(self.root / name)
            await asyncio.to_thread(valkey.start)
            syncd_port = free_port()
            syncd = Part(
                f"syncd-{name}",
                "syncd",
                {
                    "CRIVLINE_SYNCD_BUS_ONLY": "on",
                    "CRIVLINE_REPLICA_URL": self.standby_url,
                    "CRIVLINE_BUS_URL": self.bus.url,
                    "CRIVLINE_REDIS_URL": valkey.url,
                    "CRIVLINE_EDGE_ID": name,
                    "CRIVLINE_SYNCD_PORT": str(syncd_port),
                    "CRIVLINE_SYNCD_CONCURRENCY": str(self.concurrency),
                },
                logs / f"syncd-{name}.log",
                syncd_port,
            )
            proxy = None
            if number <= self.proxies_wanted:
                proxy_port = free_port()
                proxy = Part(
                    f"proxy-{name}",
                    "proxy",
                    {
                        "CRIVLINE_REDIS_URL": valkey.url,
                        "CRIVLINE_EDGE_ID": name,
                        "CRIVLINE_PROXY_PORT": str(proxy_port),
                    },
                    logs / f"proxy-{name}.log",
                    proxy_port,
                )
            self.edges.append(Edge(name, valkey, syncd, proxy))
        for part in self.parts():
            if part.proc is None:
                part.start()
        say(f"{len(self.edges)} edges starting")

    def stop(self) -> None:
        for part in self.parts():
            part.stop()
        for edge in self.edges:
            edge.valkey.stop()
        for server in (self.bus, self.standby, self.primary):
            if server is not None:
                server.stop()


async def ready(session: aiohttp.ClientSession, part: Part) -> bool:
    if not part.alive():
        raise RuntimeError(f"{part.name} exited; see {part.log}")
    try:
        async with session.get(f"http://127.0.0.1:{part.port}/readyz") as answer:
            return answer.status == 200
    except (aiohttp.ClientError, OSError):
        return False


async def wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session = session
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def ok(self, method: str, path: str, body: Any) -> Any:
        async with self.session.request(
            method, self.base + "/api/v1" + path, json=body, headers=self.headers
        ) as answer:
            text = await answer.read()
            if answer.status not in (200, 201):
                raise RuntimeError(f"{method} {path}: {answer.status} {text[:200]!r}")
            return orjson.loads(text)


async def follow(
    client: aioredis.Redis, channel: str, on_message: Any, subscribed: asyncio.Event
) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    subscribed.set()
    try:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "message":
                on_message(orjson.loads(message["data"]), time.time())
    finally:
        await pubsub.aclose()


async def connections(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT coalesce(nullif(application_name, ''), backend_type) AS who, count(*)"
            "  FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            "   AND backend_type IN ('client backend', 'walsender') GROUP BY 1"
        )
    finally:
        await conn.close()
    return {row["who"]: row["count"] for row in rows}


async def committed_transactions(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", DATABASE
        )
    finally:
        await conn.close()
    return int(value or 0)


def edge_metric(edge: Edge, name: str) -> float:
    try:
        page = metrics(f"http://127.0.0.1:{edge.syncd.port}")
    except OSError:
        return 0.0
    return sum(value for key, value in page.items() if key.split("{")[0] == name)


def commit_lag_buckets(edge: Edge) -> dict[float, float]:
    """syncd's own commit → Redis histogram: upper bound (s) → cumulative count."""
    try:
        page = metrics(f"http://127.0.0.1:{edge.syncd.port}")
    except OSError:
        return {}
    out: dict[float, float] = {}
    for key, value in page.items():
        if key.startswith("crivline_syncd_commit_lag_seconds_bucket{"):
            bound = key.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = value
    return out


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (an upper estimate)."""
    if not buckets:
        return None
    total = buckets[max(buckets)]
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return None


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


async def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    say = print
    root = _reachable_temp("crivline-fleet-")
    fleet = Fleet(root, args.edges, args.proxies, args.syncd_concurrency)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "settings": vars(args),
    }
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    clients: list[aioredis.Redis] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        started = time.monotonic()
        await fleet.start(say)
        assert fleet.control is not None
        assert fleet.bus is not None
        control, relay = fleet.control, fleet.relay
        await wait_until(lambda: ready(session, control), 60, "control")
        assert relay is not None
        await wait_until(lambda: ready(session, relay), 60, "the relay")
        api = Api(session, f"http://127.0.0.1:{fleet.control.port}", fleet.token)
        await api.ok("POST", "/projects", {"key": "shop"})
        environments = []
        for number in range(args.environments):
            created = await api.ok("POST", "/projects/shop/environments", {"key": f"env{number}"})
            environments.append((f"env{number}", created["id"]))
        for number in range(args.flags):
            await api.ok("POST", "/projects/shop/flags", {
                "key": f"flag{number}", "type": "boolean",
                "variants": {"on": True, "off": False}, "defaultVariant": "off",
            })  # fmt: skip
        for edge in fleet.edges:
            for part in (edge.syncd, edge.proxy):
                if part is not None:
                    await wait_until(lambda p=part: ready(session, p), 120, part.name)
        say(f"fleet ready after {time.monotonic() - started:.1f}s")
        results["startup_seconds"] = round(time.monotonic() - started, 1)

        # Listeners: each edge's announcements, and the bus.
        subscribed: list[asyncio.Event] = []

        def listen(client: aioredis.Redis, channel: str, on_message: Any) -> None:
            clients.append(client)
            subscribed.append(asyncio.Event())
            tasks.append(asyncio.create_task(follow(client, channel, on_message, subscribed[-1])))

        for edge in fleet.edges:

            def announced(doc: dict[str, Any], at: float, edge: Edge = edge) -> None:
                env, version = doc.get("e"), doc.get("v")
                if not isinstance(env, str) or not isinstance(version, int) or version < 1:
                    return
                edge.arrived.setdefault((env, version), at)
                edge.highest[env] = max(version, edge.highest.get(env, 0))

            listen(aioredis.from_url(edge.valkey.url), PREFIX + "changes", announced)
        bus_messages: list[tuple[str, int, float]] = []
        commit_at: dict[tuple[str, int], float] = {}

        def on_bus(doc: dict[str, Any], _at: float) -> None:
            env, version, at = doc.get("e"), doc.get("v"), doc.get("at")
            if isinstance(env, str) and isinstance(version, int):
                bus_messages.append((env, version, time.monotonic()))
                if isinstance(at, int | float):
                    commit_at.setdefault((env, version), float(at))

        listen(aioredis.from_url(fleet.bus.url), PREFIX + "bus", on_bus)
        async with asyncio.timeout(30):
            for event in subscribed:
                await event.wait()

        conn_samples: dict[str, list[dict[str, int]]] = {"primary": [], "standby": []}
        rss_samples: list[dict[str, int]] = []

        async def sample() -> None:
            while True:
                conn_samples["primary"].append(await connections(fleet.database_url))
                assert fleet.standby is not None
                conn_samples["standby"].append(await connections(fleet.standby.url))
                rss_samples.append(
                    {
                        edge.name: sum(
                            rss_bytes(p.proc.pid)
                            for p in (edge.syncd, edge.proxy)
                            if p is not None and p.proc is not None
                        )
                        + (rss_bytes(edge.valkey.pid) if edge.valkey.pid else 0)
                        for edge in fleet.edges
                    }
                )
                await asyncio.sleep(1.0)

        tasks.append(asyncio.create_task(sample()))
        counted = (
            "crivline_syncd_reconciliations_total",
            "crivline_syncd_snapshot_reads_total",
            "crivline_syncd_replica_lag_retries_total",
        )
        before = {name: sum(edge_metric(e, name) for e in fleet.edges) for name in counted}
        lag_before = [commit_lag_buckets(e) for e in fleet.edges]
        standby_before = await committed_transactions(fleet.standby_url)

        # Steady writes.
        writes: list[tuple[str, int, float]] = []  # env id, version, wall-clock ack
        interval = 1.0 / args.rate
        say(f"writing {args.rate}/s for {args.duration}s")
        t0 = time.monotonic()
        number = 0
        flipped: dict[tuple[str, str], bool] = {}
        newest: dict[str, int] = {}
        while time.monotonic() - t0 < args.duration:
            key, env = environments[number % len(environments)]
            flag = f"flag{number % args.flags}"
            flipped[(key, flag)] = not flipped.get((key, flag), False)  # every write changes
            answer = await api.ok(
                "PUT",
                f"/projects/shop/flags/{flag}/environments/{key}",
                {"state": "ENABLED", "defaultVariant": "on" if flipped[(key, flag)] else "off"},
            )
            version = int(answer["environmentVersion"])
            if version <= newest.get(env, 0):
                raise RuntimeError(f"a write did not bump {key}: version {version}")
            newest[env] = version
            writes.append((env, version, time.time()))
            number += 1
            await asyncio.sleep(max(0.0, t0 + number * interval - time.monotonic()))
        writing = time.monotonic() - t0

        # Let the last writes arrive (bounded), then measure.
        last = {env: max(v for e, v, _ in writes if e == env) for _, env in environments}

        async def all_arrived() -> bool:
            return all(
                edge.highest.get(env, 0) >= version
                for edge in fleet.edges
                for env, version in last.items()
            )

        with contextlib.suppress(RuntimeError):
            await wait_until(all_arrived, args.settle, "every edge at the last versions")
        elapsed = time.monotonic() - t0
        per_second = {
            name: round(
                (sum(edge_metric(e, name) for e in fleet.edges) - before[name]) / elapsed, 2
            )
            for name in counted
        }
        standby_queries = await committed_transactions(fleet.standby_url) - standby_before
        lag: dict[float, float] = {}
        for edge, earlier in zip(fleet.edges, lag_before, strict=True):
            for bound, count in commit_lag_buckets(edge).items():
                lag[bound] = lag.get(bound, 0.0) + count - earlier.get(bound, 0.0)
        observer_errors = [
            repr(task.exception()) for task in tasks if task.done() and not task.cancelled()
        ]

        latencies: list[float] = []
        missing = 0
        for env, version, acked in writes:
            committed = commit_at.get((env, version), acked)
            for edge in fleet.edges:
                times = [at for (e, v), at in edge.arrived.items() if e == env and v >= version]
                if times:
                    latencies.append(max(0.0, min(times) - committed))
                else:
                    missing += 1
        distinct = len({(e, v) for e, v, _ in bus_messages})
        memory = {
            name: max(sample[name] for sample in rss_samples) for name in rss_samples[-1]
        } if rss_samples else {}  # fmt: skip

        def held(side: str) -> dict[str, int]:
            merged: dict[str, int] = {}
            for snapshot in conn_samples[side]:
                for who, count in snapshot.items():
                    merged[who] = max(merged.get(who, 0), count)
            return merged

        with_proxy = [e.name for e in fleet.edges if e.proxy is not None]
        results.update(
            {
                "edges": len(fleet.edges),
                "proxies": len(with_proxy),
                "writes": len(writes),
                "write_rate": round(len(writes) / writing, 2),
                "seconds": round(elapsed, 1),
                "commit_to_edge_redis_ms": {
                    "samples": len(latencies),
                    "p50": _ms(percentile(latencies, 50)),
                    "p99": _ms(percentile(latencies, 99)),
                    "max": _ms(max(latencies) if latencies else None),
                    "never_arrived": missing,
                },
                "syncd_commit_lag_bucket_ms": {
                    "p50_at_most": _ms(bucket_quantile(lag, 0.50)),
                    "p99_at_most": _ms(bucket_quantile(lag, 0.99)),
                },
                "observer_errors": observer_errors,
                "connections_max": {"primary": held("primary"), "standby": held("standby")},
                "standby_transactions_per_second": round(standby_queries / elapsed, 1),
                "reconciliations_per_second": per_second[counted[0]],
                "snapshot_reads_per_second": per_second[counted[1]],
                "standby_version_polls_per_second": per_second[counted[2]],
                "bus_messages_per_second": round(len(bus_messages) / elapsed, 2),
                "bus_distinct_versions_per_second": round(distinct / elapsed, 2),
                "rss_mib_per_edge": {
                    "median_without_proxy": _mib(
                        _median([v for k, v in memory.items() if k not in with_proxy])
                    ),
                    "median_with_proxy": _mib(
                        _median([v for k, v in memory.items() if k in with_proxy])
                    ),
                    "max": _mib(max(memory.values()) if memory else None),
                },
                "load_average_at_end": os.getloadavg(),
            }
        )
        return results
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
        await session.close()
        await asyncio.to_thread(fleet.stop)
        logs = root / "logs"
        if logs.is_dir():
            target = out / "logs"
            target.mkdir(parents=True, exist_ok=True)
            for log in logs.iterdir():
                (target / log.name).write_bytes(log.read_bytes())
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _mib(size: float | None) -> float | None:
    return None if size is None else round(size / 2**20, 1)


def _median(values: list[int]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2])


def report(results: dict[str, Any]) -> str:
    lat = results["commit_to_edge_redis_ms"]
    rss = results["rss_mib_per_edge"]
    lines = [
        f"# Fleet simulation, {results['when']}",
        "",
        f"{results['edges']} bus-only edges ({results['proxies']} with a proxy; syncd"
        f" concurrency {results['settings']['syncd_concurrency']}), one primary,"
        " one standby (pg_basebackup), one relay, one bus;"
        f" {results['writes']} writes at {results['write_rate']}/s through control.",
        "",
        f"Taken on a shared machine under load: {results['machine']['cpus']} CPUs, load"
        f" average {results['machine']['load_average_at_start'][0]:.1f} at the start and"
        f" {results['load_average_at_end'][0]:.1f} at the end (other test suites ran"
        " meanwhile). Read the figures as orders of magnitude.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| commit → edge Redis p50 | {lat['p50']} ms |",
        f"| commit → edge Redis p99 | {lat['p99']} ms |",
        f"| commit → edge Redis max | {lat['max']} ms |",
        f"| syncd's own commit → Redis histogram, p50 / p99 bucket (upper bound) |"
        f" ≤ {results['syncd_commit_lag_bucket_ms']['p50_at_most']} ms /"
        f" ≤ {results['syncd_commit_lag_bucket_ms']['p99_at_most']} ms |",
        f"| (write, edge) pairs measured / never arrived | {lat['samples']} / "
        f"{lat['never_arrived']} |",
        f"| connections on the primary (max, by application) | "
        f"{_who(results['connections_max']['primary'])} |",
        f"| connections on the standby (max, by application) | "
        f"{_who(results['connections_max']['standby'])} |",
        f"| standby transactions/s (all edges) | {results['standby_transactions_per_second']} |",
        f"| reconciliation passes/s (all edges) | {results['reconciliations_per_second']} |",
        f"| snapshot reads/s (all edges) | {results['snapshot_reads_per_second']} |",
        f"| version polls of a lagging standby/s (all edges) |"
        f" {results['standby_version_polls_per_second']} |",
        f"| bus messages/s (distinct versions/s) | {results['bus_messages_per_second']} "
        f"({results['bus_distinct_versions_per_second']}) |",
        f"| RSS per edge, median: syncd + Valkey | {rss['median_without_proxy']} MiB |",
        f"| RSS per edge, median: syncd + Valkey + proxy | {rss['median_with_proxy']} MiB |",
        f"| fleet start-up | {results['startup_seconds']} s |",
        "",
        "The commit → edge Redis figures are taken by one observer process subscribed to"
        " every edge's announcements; on a busy machine they include that observer's own"
        " scheduling delay. syncd's histogram is measured inside each syncd as it writes.",
        "",
    ]
    return "\n".join(lines)


def _who(counts: dict[str, int]) -> str:
    return ", ".join(f"{who} {n}" for who, n in sorted(counts.items())) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--proxies", type=int, default=3, help="edges that also run a proxy")
    parser.add_argument("--environments", type=int, default=4)
    parser.add_argument("--flags", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of writes")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait at the end")
    parser.add_argument(
        "--syncd-concurrency", type=int, default=4, help="CRIVLINE_SYNCD_CONCURRENCY of each edge"
    )
    parser.add_argument("--smoke", action="store_true", help="3 edges, a few seconds")
    parser.add_argument("--out", type=Path, help="report folder (default loadtests/results/…)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folder")
    args = parser.parse_args()
    if args.smoke:
        args.edges, args.proxies, args.environments, args.flags = 3, 1, 2, 3
        args.rate, args.duration, args.settle = 2.0, 4.0, 30.0
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"fleet-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, out))
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    text = report(results)
    (out / "report.md").write_text(text)
    print(text)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
