"""What must hold after the faults stop, checked against the real processes.

:func:`converge` polls :func:`problems` until it returns nothing, and fails when the
bound passes first. Converged means, at every edge and every proxy process:

- ``/sdk/v1/flags`` answers exactly the bytes (and the version) of control's
  ``…/flagset`` for every environment;
- every stream client holds exactly that flag set at that version (its ``put`` with
  every ``patch`` applied in order), and every poller has seen that version;
- every key the storm revoked is refused (401/403), every key it created and did not
  revoke is accepted;
- every acknowledged write's version is at most the central version (no acknowledged
  write was lost by Postgres), and no syncd ever found Redis ahead of Postgres;
- every part is ready again (syncd ``/readyz``, proxy ``/readyz?strict=1``).

After convergence, :func:`delta_chain_problems` checks each edge's delta log: every
acknowledged version lies in an entry's ``(base, v]``, so it was applied there (alone
or merged with neighbours), not skipped.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import aiohttp
from fault_clients import Clients
from fault_cluster import BOUND, Cluster
from fault_storm import Storm
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support.waiting import eventually

from crivline import redisconn
from crivline.keyspace import Keyspace


@dataclass
class Measurement:
    test: str
    converged_after: float
    bound: float
    storm: str
    faults: list[str] = field(default_factory=list)
    after_heal: float = 0.0  # seconds from the last fault's end (the storm may run on)


REPORT: list[Measurement] = []


async def _get(session: aiohttp.ClientSession, url: str, key: str) -> tuple[int, bytes, str | None]:
    try:
        async with session.get(
            url, headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=3)
        ) as response:
            return response.status, await response.read(), response.headers.get("Crivline-Version")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return 0, repr(exc).encode(), None


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([-+0-9.eEinfa]+)$", re.MULTILINE)
    for match in pattern.finditer(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def scrape(cluster: Cluster, part_name: str) -> str:
    part = next(p for p in cluster.parts() if p.name == part_name)
    async with cluster.session.get(part.url + "/metrics") as response:
        return await response.text()


async def problems(cluster: Cluster, storm: Storm, clients: Clients) -> list[str]:
    out: list[str] = []
    session = cluster.session
    envs = cluster.environment_ids()
    central: dict[str, tuple[int, int, bytes]] = {}
    try:
        answers = await asyncio.gather(*(cluster.central_flagset(env) for env in envs))
    except (aiohttp.ClientError, OSError, TimeoutError, AssertionError) as exc:
        return [f"control cannot show the central state: {exc!r}"]
    central = dict(zip(envs, answers, strict=True))

    for ack in storm.acks:
        if ack.version > central[ack.env][0]:
            out.append(
                f"acknowledged {ack.op} at version {ack.version} of {ack.env}, but the central "
                f"version is {central[ack.env][0]}: Postgres lost an acknowledged write"
            )

    checks = []
    for edge in cluster.edges:
        for proxy in edge.proxies:
            for env in envs:
                key = cluster.tenant_of(env).stream_keys[env]
                checks.append(("flags", edge.name, proxy.name, env, proxy.url, key))
            for secret, env, _at in storm.revoked:
                checks.append(("revoked", edge.name, proxy.name, env, proxy.url, secret))
            for secret, env in storm.live_keys.values():
                checks.append(("live", edge.name, proxy.name, env, proxy.url, secret))
    results = await asyncio.gather(
        *(_get(session, url + "/sdk/v1/flags", key) for _, _, _, _, url, key in checks)
    )
    for (what, edge_name, proxy_name, env, _url, _key), (status, body, version) in zip(
        checks, results, strict=True
    ):
        where = f"{edge_name}/{proxy_name} {env}"
        want_version, _, want_body = central[env]
        if what == "flags":
            if status != 200:
                out.append(f"{where}: /sdk/v1/flags answered {status} {body[:120]!r}")
            elif version != str(want_version) or body != want_body:
                out.append(f"{where}: serves version {version}, central is {want_version}")
        elif what == "revoked" and status not in (401, 403):
            out.append(f"{where}: a revoked key is accepted (HTTP {status})")
        elif what == "live" and status != 200:
            out.append(f"{where}: a live key is refused (HTTP {status})")

    for watcher in clients.watchers:
        # A stream's ids name the flag set's version (key-only versions send nothing).
        _, want_flags, want_body = central[watcher.env]
        if watcher.version != want_flags or watcher.flag_set_bytes() != want_body:
            out.append(
                f"stream {watcher.edge} {watcher.env}: at flag set version {watcher.version}, "
                f"central is {want_flags}"
                + ("" if watcher.version != want_flags else " (the flag set differs)")
            )
    for poller in clients.pollers:
        want_version, _, want_body = central[poller.env]
        if poller.version != want_version or poller.body != want_body:
            out.append(
                f"poller {poller.edge} {poller.env}: at version {poller.version}, "
                f"central is {want_version}"
            )

    not_ready = await cluster.all_ready()
    if not_ready:
        out.append(f"not ready: {', '.join(not_ready)}")
    return out


async def syncd_never_ahead(cluster: Cluster) -> list[str]:
    """No syncd found Redis ahead of Postgres (which would mean Postgres lost writes)."""
    out = []
    for edge in cluster.edges:
        for part in edge.syncds:
            text = await scrape(cluster, part.name)
            ahead = metric(text, "crivline_syncd_version_ahead_total")
            if ahead:
                out.append(f"{part.name} found Redis ahead of Postgres {ahead:.0f} times")
    return out


async def converge(
    cluster: Cluster, storm: Storm, clients: Clients, quiet_at: float, bound: float = BOUND
) -> float:
    """Seconds from ``quiet_at`` (monotonic) until everything holds; fails past the bound."""
    deadline = quiet_at + bound
    while True:
        found = await problems(cluster, storm, clients)
        now = time.monotonic()
        if not found:
            return now - quiet_at
        if now > deadline:
            shown = "\n  ".join(found[:25])
            more = f"\n  … and {len(found) - 25} more" if len(found) > 25 else ""
            raise AssertionError(
                f"not converged {bound:.1f}s after the faults stopped:\n  {shown}{more}\n"
                f"storm: {storm.summary()}\n{cluster.logs()}"
            )
        await asyncio.sleep(0.1)


async def _delta_logs(
    url: str, keys: Keyspace, envs: list[str]
) -> tuple[str, dict[str, tuple[list[tuple[int, int]], int]]]:
    """Each environment's delta log spans and version in one edge Redis."""
    client = redisconn.client(redisconn.parse("CRIVLINE_REDIS_URL", url))
    try:
        logs = {}
        for env in envs:
            entries = await client.xrange(keys.deltas(env))
            spans = [(int(fields[b"base"]), int(fields[b"v"])) for _id, fields in entries]
            logs[env] = (spans, int(await client.hget(keys.environment(env), "version") or 0))
        return "read", logs
    finally:
        await client.aclose()


async def delta_chain_problems(cluster: Cluster, storm: Storm) -> list[str]:
    out: list[str] = []
    for edge in cluster.edges:
        keys = Keyspace("crivline:", f"edge-{edge.name}")
        # Sentinels may still be settling a failover a moment after the edge converged:
        # a new client asks them again rather than failing the check.
        _, logs = await eventually(
            lambda edge=edge, keys=keys: _delta_logs(
                edge.redis_url, keys, cluster.environment_ids()
            ),
            within=15,
            what=f"edge {edge.name}'s delta logs",
            tolerate=(RedisConnectionError, RedisTimeoutError),
        )
        for env, (spans, final) in logs.items():
            for ack in storm.acks:
                if ack.env != env:
                    continue
                if ack.version > final:
                    out.append(f"edge {edge.name} {env}: at {final} < acknowledged {ack}")
                elif not any(base < ack.version <= v for base, v in spans):
                    out.append(
                        f"edge {edge.name} {env}: no delta entry covers acknowledged "
                        f"version {ack.version} ({ack.op}); entries {spans[-12:]}"
                    )
            previous = 0
            for _base, v in spans:
                if v <= previous:
                    out.append(f"edge {edge.name} {env}: the delta log went back at {v}")
                previous = v
    return out
