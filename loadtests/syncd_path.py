"""syncd's path from a wake-up to the edge Redis write: round trips and CPU per change.

On a busy machine every await is a point where syncd waits for the CPU, so the figures
that matter and do not depend on the machine's load are the round trips (Postgres
statements, Redis requests) and the CPU one applied change costs. This counts them
against real servers: embedded PostgreSQL and Valkey in a temporary folder, the demo
tenant with the bench's 100-flag set (:mod:`ltflags`) and 32 server keys besides its
own two in its ``production`` environment, syncd's own pools and Redis client built as ``crivline
syncd`` builds them (syncd's least-privilege login, the production pool settings).

Each change is written the way control writes one (a flag's state and the bump, in one
transaction, by the owner), then handed to syncd's replicator as the NOTIFY would hand
it (``Want`` with the version, commit time and arrival time). Around that call only:

- Postgres statements: every query syncd's connections send (asyncpg's query logger on
  a connection subclass; pool resets included);
- Redis requests: every packed send on syncd's Redis connections (a pipeline is one),
  and Redis commands executed, from the server's ``INFO commandstats`` (the commands
  Lua scripts call included);
- CPU: ``time.process_time()`` (the driver's own writes fall outside the window).

Phases: ``flags`` (a flag's state flips: the flag set changes) and ``keys`` (a bump
that leaves the flag set, as a key or plan change does). Figures are per applied change,
after a warm-up (statement cache, script load).

    .venv/bin/python loadtests/syncd_path.py [--changes 200] [--warmup 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import ltflags
import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection as RedisConnection

from crivline import tokens
from crivline.embedded import PostgresServer, ValkeyServer
from crivline.keyspace import Keyspace
from crivline.migrate import migrate
from crivline.roles import GROUPS, ensure_login, role_url
from crivline.seed import SYSTEM_ACTOR, create_api_key, seed_demo
from crivline.snapshot import set_json_codecs
from syncd import clients
from syncd.config import SyncdConfig
from syncd.daemon import Daemon
from syncd.replicate import Outcome, Want

SERVER_KEYS = 32
PHASES = ("flags", "keys")


class Counts:
    postgres = 0
    redis = 0


class CountingPostgres(asyncpg.Connection):
    """A connection that counts every statement it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_query_logger(self._count)

    @staticmethod
    def _count(_record: Any) -> None:
        Counts.postgres += 1


class CountingRedis(RedisConnection):
    """A connection that counts its requests (a pipeline's commands go in one)."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Counts.redis += 1
        await super().send_packed_command(command, check_health)


@contextmanager
def counting_pools() -> Iterator[None]:
    """syncd's own pool settings, with the counting connection class."""
    real = asyncpg.create_pool

    def create_pool(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        return real(*args, connection_class=CountingPostgres, **kwargs)

    with mock.patch.object(asyncpg, "create_pool", create_pool):
        yield


async def seed(conn: asyncpg.Connection) -> str:
    """The demo tenant's production environment with the bench flag set and keys."""
    await seed_demo(conn)
    env = await conn.fetchrow(
        "SELECT id::text AS id, tenant_id::text AS tenant, project_id::text AS project"
        " FROM environments WHERE key = 'production'"
    )
    assert env is not None
    doc = ltflags.flag_set()
    async with conn.transaction():
        for key, flag in doc["flags"].items():
            flag_id = await conn.fetchval(
                """INSERT INTO flags (tenant_id, project_id, key, type, variants, metadata)
                   VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) RETURNING id""",
                env["tenant"], env["project"], key, _type(flag["variants"]),
                flag["variants"], flag.get("metadata") or {},
            )  # fmt: skip
            await conn.execute(
                """INSERT INTO flag_environments (tenant_id, project_id, flag_id,
                       environment_id, state, default_variant, targeting)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
                env["tenant"], env["project"], flag_id, env["id"], flag["state"],
                flag["defaultVariant"], flag.get("targeting"),
            )  # fmt: skip
        for key, definition in (doc.get("$evaluators") or {}).items():
            await conn.execute(
                "INSERT INTO segments (tenant_id, project_id, key, definition)"
                " VALUES ($1, $2, $3, $4::jsonb)",
                env["tenant"], env["project"], key, definition,
            )  # fmt: skip
        for n in range(SERVER_KEYS):
            await create_api_key(
                conn, env["tenant"], env["project"], env["id"], tokens.SecretKind.SERVER,
                f"bench key {n}", SYSTEM_ACTOR,
            )  # fmt: skip
        await conn.execute("SELECT crivline_bump_environment($1)", env["id"])
    return str(env["id"])


def _type(variants: dict[str, Any]) -> str:
    value = next(iter(variants.values()))
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string" if isinstance(value, str) else "object"


async def change(conn: asyncpg.Connection, env: str, n: int, phase: str) -> tuple[int, float]:
    """One central change as control makes it: the write and the bump, one transaction."""
    async with conn.transaction():
        if phase == "flags":
            flag = ltflags.WRITE_FLAGS[n % len(ltflags.WRITE_FLAGS)]
            await conn.execute(
                """UPDATE flag_environments fe SET state = CASE fe.state
                       WHEN 'ENABLED' THEN 'DISABLED' ELSE 'ENABLED' END
                     FROM flags f WHERE f.id = fe.flag_id AND f.key = $1
                      AND fe.environment_id = $2""",
                flag,
                env,
            )
        version = await conn.fetchval(
            "SELECT crivline_bump_environment($1, NULL, $2)", env, phase == "flags"
        )
    return int(version), time.time()


async def commands(admin: aioredis.Redis) -> int:
    stats = await admin.info("commandstats")
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if k not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    )


@dataclass
class Figures:
    phase: str
    changes: int
    postgres: float
    redis_requests: float
    redis_commands: float
    cpu_us: float
    cpu_us_median: float


async def run_phase(
    daemon: Daemon, owner: asyncpg.Connection, admin: aioredis.Redis, env: str, phase: str,
    changes: int, warmup: int,
) -> Figures:  # fmt: skip
    cpu: list[float] = []
    postgres = redis_requests = redis_commands = 0
    for n in range(warmup + changes):
        version, at = await change(owner, env, n, phase)
        before_commands = await commands(admin)
        Counts.postgres = Counts.redis = 0
        want = Want(version=version, at=at, received=time.monotonic(), source="notify")
        started = time.process_time()
        outcome = await daemon.replicator.sync(env, want)
        spent = time.process_time() - started
        if outcome is not Outcome.APPLIED:
            raise RuntimeError(f"change {n} ({phase}): {outcome}, not applied")
        if n < warmup:
            continue
        cpu.append(spent)
        postgres += Counts.postgres
        redis_requests += Counts.redis
        redis_commands += await commands(admin) - before_commands
    return Figures(
        phase=phase,
        changes=changes,
        postgres=postgres / changes,
        redis_requests=redis_requests / changes,
        redis_commands=redis_commands / changes,
        cpu_us=sum(cpu) / changes * 1e6,
        cpu_us_median=statistics.median(cpu) * 1e6,
    )


async def measure(folder: Path, changes: int, warmup: int) -> list[Figures]:
    postgres = PostgresServer(folder / "postgres", durable=False)
    valkey = ValkeyServer(folder / "valkey")
    postgres.start()
    valkey.start()
    try:
        owner = await asyncpg.connect(postgres.url_for("postgres"))
        try:
            await migrate(owner)
            await set_json_codecs(owner)
            await ensure_login(owner, "syncd", GROUPS["syncd"], None)
            env = await seed(owner)
            config = SyncdConfig(keyspace=Keyspace("crivline:", "bench"), port=0)
            with counting_pools():
                pool = await clients.postgres_pool(
                    role_url(postgres.url_for("postgres"), GROUPS["syncd"]), config
                )
            redis = aioredis.Redis.from_url(
                valkey.url, connection_class=CountingRedis, **clients.redis_options(config)
            )
            admin = aioredis.Redis.from_url(valkey.url, decode_responses=True)
            daemon = Daemon(config, primary=pool, redis=redis)
            try:
                return [
                    await run_phase(daemon, owner, admin, env, phase, changes, warmup)
                    for phase in PHASES
                ]
            finally:
                await redis.aclose()
                await admin.aclose()
                await pool.close()
        finally:
            await owner.close()
    finally:
        valkey.stop()
        postgres.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="crivline-syncd-path-"))
    folder.chmod(0o711)  # the embedded PostgreSQL may run as its own user (see embedded)
    try:
        figures = asyncio.run(measure(folder, args.changes, args.warmup))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(orjson.dumps([f.__dict__ for f in figures], option=orjson.OPT_INDENT_2).decode())
        return
    print("phase   changes  pg stmts  redis reqs  redis cmds*  cpu µs (mean)  cpu µs (median)")
    for f in figures:
        print(
            f"{f.phase:<7} {f.changes:>7}  {f.postgres:>8.2f}  {f.redis_requests:>10.2f}"
            f"  {f.redis_commands:>10.2f}  {f.cpu_us:>13.0f}  {f.cpu_us_median:>15.0f}"
        )
    print("* commands Valkey executed, those its scripts call included")


if __name__ == "__main__":
    main()
