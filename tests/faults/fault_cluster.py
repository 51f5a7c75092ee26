"""The fault suite's topology: real processes on one machine, each one killable.

::

    central Postgres (durable) ── control (process) ──► bus Valkey ───────────────┐
        │  NOTIFY                                                               │
        ├─ edge a: Valkey a ◄─ syncd a1            ─► proxy a1, proxy a2          │
        ├─ edge b: Valkey b ◄─ syncd b1, syncd b2  ─► proxy b1                   │
        └─ edge c: Valkey c ◄─ syncd c1 (+ bus) ◄──────────────────────────────────┘
                                                   ─► proxy c1

Every part runs as ``python -m crivline <part>`` in its own process group, so a test can
SIGKILL it (a crash, as far as anyone can tell) and start it again on the same port.
Postgres is the suite's own, durable server (``synchronous_commit`` on): a SIGKILL must
not lose an acknowledged write, which the session server (fsync and synchronous commit
off, for speed) would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from support.roles import part_url
from support.waiting import eventually

from crivline.embedded import PostgresServer, ValkeyServer, free_port
from crivline.migrate import migrate
from crivline.roles import GROUPS, ensure_login
from crivline.seed import create_tenant, issue_edge_credential
from crivline.snapshot import set_json_codecs

INTERVAL = 0.5  # CRIVLINE_RECONCILE_INTERVAL of every syncd (and proxy)
BOUND = INTERVAL + 5.0  # after the faults stop, everything holds within this many seconds
DATABASE = "crivline_faults"
ENVIRONMENTS = ("dev", "prod")
FLAGS = ("f0", "f1", "f2", "f3", "f4", "banner")
TENANTS = ("acme", "globex", "initech")


async def wait_until(
    condition: Callable[[], Any], within: float, what: str, *, every: float = 0.05
) -> Any:
    """:func:`support.waiting.eventually`, counting a server that does not answer yet as
    a falsy answer."""
    return await eventually(
        condition, within, what, every=every, tolerate=(aiohttp.ClientError, OSError)
    )


def _base_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Part:
    """One ``crivline <part>`` process: started, SIGKILLed, stopped, started again."""

    name: str
    command: str  # control | syncd | proxy
    port: int
    settings: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running(), f"{self.name} is already running"
        env = {**_base_environ(), **self.settings}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crivline", self.command],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    async def kill(self) -> None:
        """SIGKILL to its process group: no clean-up, no goodbye to anyone."""
        self._signal(signal.SIGKILL)
        await self._reap(10)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it takes longer than 15 s."""
        self._signal(signal.SIGTERM)
        if not await self._reap(15):
            await self.kill()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    async def _reap(self, within: float) -> bool:
        if self.proc is None:
            return True
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@dataclass
class Edge:
    name: str
    valkey: ValkeyServer  # or a highly available one (see build)
    syncds: list[Part]
    proxies: list[Part]

    @property
    def redis_url(self) -> str:
        return self.valkey.url


@dataclass
class Tenant:
    key: str
    token: str
    project: str
    environments: dict[str, str]  # key -> id
    stream_keys: dict[str, str]  # environment id -> a server key never revoked

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Cluster:
    root: Path
    postgres: PostgresServer
    bus: ValkeyServer  # or a highly available one (see build)
    control: Part
    edges: list[Edge]
    session: aiohttp.ClientSession
    tenants: list[Tenant] = field(default_factory=list)

    # -- what there is ------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.postgres.url_for(DATABASE)

    def parts(self) -> list[Part]:
        out = [self.control]
        for edge in self.edges:
            out += edge.syncds + edge.proxies
        return out

    def edge(self, name: str) -> Edge:
        return next(e for e in self.edges if e.name == name)

    def environment_ids(self) -> list[str]:
        return [env for t in self.tenants for env in t.environments.values()]

    def tenant_of(self, env: str) -> Tenant:
        return next(t for t in self.tenants if env in t.environments.values())

    def environment_key(self, env: str) -> str:
        tenant = self.tenant_of(env)
        return next(k for k, v in tenant.environments.items() if v == env)

    # -- HTTP helpers -------------------------------------------------------------------

    async def api(
        self, tenant: Tenant, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.control.url}/api/v1{path}", json=body, headers=tenant.auth
        ) as response:
            raw = await response.read()
            try:
                return response.status, orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                return response.status, raw

    async def api_ok(self, tenant: Tenant, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self.api(tenant, method, path, body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    async def central_flagset(self, env: str) -> tuple[int, int, bytes]:
        """(version, the flag set's version, bytes) of the environment, from control."""
        tenant = self.tenant_of(env)
        path = f"/projects/{tenant.project}/environments/{self.environment_key(env)}/flagset"
        async with self.session.get(
            f"{self.control.url}/api/v1{path}", headers=tenant.auth
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise AssertionError(f"control answered {response.status} for the flag set")
            return (
                int(response.headers["Crivline-Version"]),
                int(response.headers["Crivline-Flags-Version"]),
                body,
            )

    async def ready(self, part: Part) -> bool:
        path = "/readyz?strict=1" if part.command == "proxy" else "/readyz"
        try:
            async with self.session.get(
                part.url + path, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def answers(self, part: Part) -> bool:
        """The process answers HTTP (ready or not)."""
        try:
            async with self.session.get(
                part.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def all_ready(self) -> list[str]:
        """Names of the parts that are not ready (empty: all are)."""
        results = await asyncio.gather(*(self.ready(p) for p in self.parts()))
        return [p.name for p, ok in zip(self.parts(), results, strict=True) if not ok]

    # -- life cycle ---------------------------------------------------------------------

    async def ensure_running(self) -> None:
        """Whatever an earlier test left dead is started again; then wait until ready."""
        if not self.postgres.running():
            await asyncio.to_thread(self.postgres.start)
        for valkey in [self.bus, *(e.valkey for e in self.edges)]:
            if not valkey.running():
                await asyncio.to_thread(valkey.start)
        for part in self.parts():
            if not part.running():
                part.start()
        await wait_until(
            lambda: _none_or(self.all_ready()), 60, "every part of the cluster to be ready"
        )

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.parts()))
        await self.session.close()
        for valkey in [self.bus, *(e.valkey for e in self.edges)]:
            await asyncio.to_thread(valkey.stop)
        await asyncio.to_thread(self.postgres.stop)

    def logs(self, lines: int = 15) -> str:
        """Where the logs were kept, and the tail of each, for a failure message."""
        kept = self.keep_logs()
        tails = "\n".join(f"== {p.name}\n{p.log_tail(lines)}" for p in self.parts())
        return f"logs kept in {kept}\n{tails}"

    def keep_logs(self) -> Path:
        """Copy every log out of the work folder (which goes with the session)."""
        target = Path(tempfile.gettempdir()) / "crivline-fault-logs" / time.strftime("%H%M%S")
        target.mkdir(parents=True, exist_ok=True)
        for log in self.root.glob("**/*.log"):
            name = log.name if log.parent == self.root else f"{log.parent.name}-{log.name}"
            shutil.copy(log, target / name)
        return target

    def processes(self) -> dict[str, int | None]:
        """The pid of every server and part that runs now (None: not running)."""
        servers: list[tuple[str, Any]] = [("postgres", self.postgres)]
        servers += _members("bus", self.bus)
        for e in self.edges:
            servers += _members(f"valkey-{e.name}", e.valkey)
        servers += [(p.name, p) for p in self.parts()]
        return {name: (s.proc.pid if s.running() else None) for name, s in servers}


def _members(name: str, server: Any) -> list[tuple[str, Any]]:
    """A server, or each process of a highly available one (a cluster, a Sentinel group)."""
    members = getattr(server, "members", None)
    if members is None:
        return [(name, server)]
    return [(f"{name}-{n}", m) for n, m in enumerate(members())]


async def _none_or(pending: Awaitable[list[str]]) -> bool:
    return not await pending


# -- building it --------------------------------------------------------------------------


def _part(root: Path, name: str, command: str, settings: dict[str, str]) -> Part:
    port = free_port()
    var = {"control": "CRIVLINE_CONTROL_PORT", "syncd": "CRIVLINE_SYNCD_PORT"}.get(
        command, "CRIVLINE_PROXY_PORT"
    )
    common = {
        "CRIVLINE_RECONCILE_INTERVAL": str(INTERVAL),
        "CRIVLINE_HEARTBEAT_TTL": "5",
        "CRIVLINE_LOG_LEVEL": "INFO",
        "CRIVLINE_RATE_LIMIT": "0",
    }
    return Part(name, command, port, {**common, **settings, var: str(port)}, root / f"{name}.log")


async def build(
    root: Path,
    *,
    edge_redis: Any = None,
    bus_redis: Any = None,
    plain: bool = False,
    tenants: Mapping[str, str] | None = None,
    usage_flush: float | None = None,
) -> Cluster:
    """Start everything, seed the tenants through the control API, wait until ready.

    With ``edge_redis`` (a running highly available Valkey: ``url``, ``running()``,
    ``start()``, ``stop()``, ``members()``), one edge ``a`` on it instead: one syncd (on the
    bus too) and two proxies. ``bus_redis`` replaces the bus the same way.

    ``plain`` (without ``edge_redis``): edges a, b and c of one syncd and one proxy each,
    none on the bus. ``tenants``: the tenants to seed, key -> plan tier (default:
    :data:`TENANTS`, uncapped). With ``usage_flush``, every syncd reports its edge's usage
    to control that often, with a credential of its own edge (else usage stays in the
    edge Redis)."""
    plans = dict.fromkeys(TENANTS, "enterprise") if tenants is None else dict(tenants)
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    postgres = PostgresServer(root / "postgres", durable=True)
    bus = bus_redis or ValkeyServer(root / "bus")
    valkeys: dict[str, Any] = (
        {"a": edge_redis}
        if edge_redis is not None
        else {name: ValkeyServer(root / f"valkey-{name}") for name in ("a", "b", "c")}
    )
    for server in [postgres, bus, *valkeys.values()]:
        if not server.running():
            await asyncio.to_thread(server.start)
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    database_url = postgres.url_for(DATABASE)
    conn = await asyncpg.connect(database_url)
    tokens: dict[str, str] = {}
    credentials: dict[str, str] = {}  # edge name -> its syncd's credential
    try:
        await set_json_codecs(conn)
        await migrate(conn)
        for part, group in GROUPS.items():  # each part as its own role, as in production
            await ensure_login(conn, part, group, None)
        for key, tier in plans.items():
            # Uncapped by default: the storm's pollers would otherwise meet the free tier's
            # daily quota in a long run (quotas have their own tests).
            tokens[key] = (await create_tenant(conn, key, plan=tier)).token
        if usage_flush is not None:
            for name in valkeys:
                credentials[name] = await issue_edge_credential(conn, f"edge-{name}")
    finally:
        await conn.close()

    control = _part(
        root,
        "control",
        "control",
        {
            "CRIVLINE_DATABASE_URL": database_url,
            "CRIVLINE_CONTROL_DATABASE_URL": part_url(database_url, "control"),
            "CRIVLINE_BUS_URL": bus.url,
        },
    )

    def syncd(edge: str, n: int, bus_url: str | None = None) -> Part:
        settings = {
            "CRIVLINE_DATABASE_URL": database_url,
            "CRIVLINE_SYNCD_DATABASE_URL": part_url(database_url, "syncd"),
            "CRIVLINE_REDIS_URL": valkeys[edge].url,
            "CRIVLINE_EDGE_ID": f"edge-{edge}",
        }
        if bus_url:
            settings["CRIVLINE_BUS_URL"] = bus_url
        if usage_flush is not None:
            settings["CRIVLINE_CONTROL_URL"] = control.url
            settings["CRIVLINE_EDGE_CREDENTIAL"] = credentials[edge]
            settings["CRIVLINE_USAGE_FLUSH_INTERVAL"] = str(usage_flush)
        return _part(root, f"syncd-{edge}{n}", "syncd", settings)

    def proxy(edge: str, n: int) -> Part:
        settings = {"CRIVLINE_REDIS_URL": valkeys[edge].url, "CRIVLINE_EDGE_ID": f"edge-{edge}"}
        return _part(root, f"proxy-{edge}{n}", "proxy", settings)

    if plain:
        edges = [Edge(n, valkeys[n], [syncd(n, 1)], [proxy(n, 1)]) for n in ("a", "b", "c")]
    elif edge_redis is None:
        edges = [
            Edge("a", valkeys["a"], [syncd("a", 1)], [proxy("a", 1), proxy("a", 2)]),
            Edge("b", valkeys["b"], [syncd("b", 1), syncd("b", 2)], [proxy("b", 1)]),
            Edge("c", valkeys["c"], [syncd("c", 1, bus.url)], [proxy("c", 1)]),
        ]
    else:
        edges = [
            Edge("a", valkeys["a"], [syncd("a", 1, bus.url)], [proxy("a", 1), proxy("a", 2)]),
        ]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    cluster = Cluster(root, postgres, bus, control, edges, session)
    try:
        control.start()
        await wait_until(lambda: cluster.ready(control), 30, "control to be ready")
        for key in plans:
            cluster.tenants.append(await _seed(cluster, key, tokens[key]))
        for part in cluster.parts():
            if not part.running():
                part.start()
        await wait_until(lambda: _none_or(cluster.all_ready()), 60, "the cluster to be ready")
    except BaseException:
        await cluster.close()
        raise
    return cluster


async def _seed(cluster: Cluster, key: str, token: str) -> Tenant:
    tenant = Tenant(key, token, "shop", {}, {})
    await cluster.api_ok(tenant, "POST", "/projects", {"key": "shop", "name": "Shop"})
    for env in ENVIRONMENTS:
        answer = await cluster.api_ok(
            tenant, "POST", "/projects/shop/environments", {"key": env, "name": env}
        )
        tenant.environments[env] = answer["id"]
    await cluster.api_ok(
        tenant,
        "PUT",
        "/projects/shop/segments/beta",
        {"definition": {"in": [{"var": "plan"}, ["pro", "team"]]}},
    )
    for flag in FLAGS:
        variants: dict[str, Any] = (
            {"a": "Hello", "b": "Howdy"} if flag == "banner" else {"on": True, "off": False}
        )
        await cluster.api_ok(
            tenant,
            "POST",
            "/projects/shop/flags",
            {
                "key": flag,
                "type": "string" if flag == "banner" else "boolean",
                "variants": variants,
            },
        )
    for env_key, env_id in tenant.environments.items():
        answer = await cluster.api_ok(
            tenant,
            "POST",
            f"/projects/shop/environments/{env_key}/keys",
            {"kind": "server", "label": "fault-suite streams"},
        )
        tenant.stream_keys[env_id] = answer["key"]
    return tenant
