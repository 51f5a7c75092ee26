"""``crivline status``: for a running edge, each environment's version at Postgres, in the
edge's Redis and at each proxy process, and how far behind each is.

The first thing to run when someone says "my change didn't arrive". It reads, never
writes: the environments in scope from the central Postgres (``CRIVLINE_SCOPE_*``
filters, as syncd applies them), the versions the edge Redis holds, syncd's heartbeat
and sync state, and what each proxy process publishes of itself in
``{p}edge:{edge}:proxies`` (:mod:`proxy.edge.presence`; a process that has not written
for ``STALE_SECONDS`` is shown as stale — stopped, or cut off from Redis).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from crivline.edge_store import EdgeStore
from crivline.keyspace import Keyspace

STALE_SECONDS = 10.0

_IN_SCOPE = """
SELECT e.id::text AS id, e.version, t.key || '/' || p.key || '/' || e.key AS name
  FROM environments e
  JOIN projects p ON p.id = e.project_id
  JOIN tenants t ON t.id = e.tenant_id
 WHERE ($1::text IS NULL OR t.key = $1)
   AND ($2::text IS NULL OR p.key = $2)
   AND ($3::text IS NULL OR e.key = $3)
 ORDER BY name
"""


@dataclass(frozen=True, slots=True)
class Scope:
    tenant: str | None = None
    project: str | None = None
    environment: str | None = None


def _proxies(raw: dict[Any, Any], now: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict):
            continue
        at = doc.get("at")
        age = now - at if isinstance(at, int | float) else None
        key = name.decode() if isinstance(name, bytes) else str(name)
        out[key] = {
            "status": doc.get("status"),
            "ageSeconds": round(age, 1) if age is not None else None,
            "stale": age is None or age > STALE_SECONDS,
            "versions": {str(k): v for k, v in doc["versions"].items() if isinstance(v, int)},
        }
    return out


def _behind(central: int | None, held: int | None) -> int | None:
    if central is None or held is None:
        return None
    return max(0, central - held)


async def gather(
    conn: asyncpg.Connection, redis: Redis, keyspace: Keyspace, scope: Scope
) -> dict[str, Any]:
    """The report, JSON-ready."""
    rows = await conn.fetch(_IN_SCOPE, scope.tenant, scope.project, scope.environment)
    store = EdgeStore(redis, keyspace)
    alive, sync = await store.liveness()
    served = await store.served()
    central = {r["id"]: (r["name"], int(r["version"])) for r in rows}
    envs = sorted(central.keys() | served, key=lambda e: (central.get(e, ("~" + e, 0))[0], e))
    held = await store.versions(envs)
    now = time.time()
    proxies = _proxies(await redis.hgetall(keyspace.proxies), now)
    environments: list[dict[str, Any]] = []
    behind_count = 0
    for env in envs:
        name, version = central.get(env, (None, None))
        redis_version = held.get(env) or None
        at_proxies = {p: doc["versions"].get(env) for p, doc in sorted(proxies.items())}
        lags = {p: _behind(version, v) for p, v in at_proxies.items()}
        redis_lag = _behind(version, redis_version) if version is not None else None
        worst = max([x for x in (redis_lag, *lags.values()) if x is not None], default=0)
        missing = redis_version is None or any(
            v is None for p, v in at_proxies.items() if not proxies[p]["stale"]
        )
        if version is not None and (worst > 0 or missing):
            behind_count += 1
        environments.append(
            {
                "id": env,
                "name": name,
                "postgres": version,
                "redis": redis_version,
                "redisBehind": redis_lag,
                "proxies": at_proxies,
                "proxiesBehind": lags,
                "behind": worst,
                "inScope": version is not None,
            }
        )
    reconciled = sync.reconciled_at
    return {
        "edge": keyspace.edge_id,
        "at": round(now, 3),
        "syncd": {
            "heartbeat": alive,
            "completeSync": sync.epoch is not None,
            "reconciledAgeSeconds": round(now - reconciled, 1) if reconciled else None,
        },
        "proxies": {
            p: {k: v for k, v in doc.items() if k != "versions"} for p, doc in proxies.items()
        },
        "environments": environments,
        "behind": behind_count,
    }


def _cell(version: int | None, lag: int | None) -> str:
    if version is None:
        return "—"
    return f"{version}" if not lag else f"{version} (-{lag})"


def render(report: dict[str, Any]) -> str:
    """The report as a table for a terminal."""
    syncd = report["syncd"]
    age = syncd["reconciledAgeSeconds"]
    lines = [
        f"edge {report['edge']}: syncd "
        + ("heartbeat ok" if syncd["heartbeat"] else "HEARTBEAT MISSING")
        + (", complete sync" if syncd["completeSync"] else ", NO COMPLETE SYNC")
        + (f", reconciled {age:g} s ago" if age is not None else ", never reconciled"),
    ]
    proxies = report["proxies"]
    names = sorted(proxies)
    for name in names:
        doc = proxies[name]
        stale = " STALE" if doc["stale"] else ""
        lines.append(f"proxy {name}: {doc['status']}, seen {doc['ageSeconds']} s ago{stale}")
    if not names:
        lines.append("no proxy process has published its state")
    header = ["environment", "postgres", "redis", *names]
    table = [header]
    for env in report["environments"]:
        table.append(
            [
                env["name"] or f"{env['id']} (not in Postgres's scope)",
                _cell(env["postgres"], None),
                _cell(env["redis"], env["redisBehind"]),
                *(_cell(env["proxies"][n], env["proxiesBehind"][n]) for n in names),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    total = len(report["environments"])
    lines.append(f"{total} environment(s), {report['behind']} behind")
    return "\n".join(lines) + "\n"
