"""``crivline up``: the whole stack on one machine.

With no ``CRIVLINE_DATABASE_URL`` / ``CRIVLINE_REDIS_URL`` it starts an embedded
PostgreSQL and Valkey with their data in the data folder; then it migrates, seeds the
demo tenant (once), starts every part this checkout has (control, syncd, proxy), writes
``<data-dir>/stack.json`` for scripts, prints what to try, and on Ctrl-C or SIGTERM stops
everything it started, in reverse order.

One ``up`` per data folder: a second one is refused while the first runs. The lock is an
``flock``, which the kernel drops when its holder dies, so a killed run leaves no stale
lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import asyncpg
import orjson

from crivline import seed
from crivline.embedded import (
    PostgresServer,
    ValkeyServer,
    how_it_ended,
    open_private,
    port_is_free,
)
from crivline.errors import DatabaseUnavailable, StackRunning, StartupError
from crivline.migrate import migrate
from crivline.roles import GROUPS, ensure_logins, role_url
from crivline.settings import Secret, Settings, redact_url
from crivline.snapshot import set_json_codecs
from crivline.supervise import RestartBudget

PARTS: tuple[tuple[str, str], ...] = (
    ("control", "CRIVLINE_CONTROL_PORT"),
    ("syncd", "CRIVLINE_SYNCD_PORT"),
    ("proxy", "CRIVLINE_PROXY_PORT"),
)
DATABASE = "crivline"


def available_parts() -> list[str]:
    """The parts this checkout has: each is a package with a ``main`` module."""
    return [name for name, _ in PARTS if importlib.util.find_spec(f"{name}.main") is not None]


def _port_of(settings: Settings, part: str) -> int:
    return int(getattr(settings, f"{part}_port"))


@dataclass
class Stack:
    settings: Settings
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    postgres: PostgresServer | None = None
    valkey: ValkeyServer | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    budgets: dict[str, RestartBudget] = field(default_factory=dict)
    _lock: IO[str] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    credentials: dict[str, str] = field(default_factory=dict)  # the embedded servers'

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    # -- start ---------------------------------------------------------------------------

    def prepare_data_dir(self) -> Path:
        data_dir = self.settings.data_dir.resolve()
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            probe = data_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StartupError(f"data folder {data_dir} is not writable: {exc.strerror}") from None
        return data_dir

    def acquire_lock(self, data_dir: Path) -> None:
        handle = open(data_dir / "up.lock", "a+")  # noqa: SIM115 - held for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StackRunning(
                f"crivline up is already running on {data_dir} (pid {holder}); "
                "stop it first or use another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def reap_leftovers(self, data_dir: Path) -> None:
        """Stop what a killed earlier run left behind (we hold the lock, so it is orphaned)."""
        pid_file = data_dir / "pids.json"
        if not pid_file.exists():
            return
        try:
            recorded = orjson.loads(pid_file.read_bytes())
        except orjson.JSONDecodeError:
            recorded = {}
        for name, entry in recorded.items():
            pid, marker = int(entry["pid"]), str(entry["marker"])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker not in cmdline:
                continue  # the pid was reused by something else
            self.say(f"• stopping {name} (pid {pid}) left over from an earlier run")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        pid_file.unlink()

    def record_pid(self, data_dir: Path, name: str, pid: int | None, marker: str) -> None:
        if pid is None:
            return
        pid_file = data_dir / "pids.json"
        recorded = orjson.loads(pid_file.read_bytes()) if pid_file.exists() else {}
        recorded[name] = {"pid": pid, "marker": marker}
        pid_file.write_bytes(orjson.dumps(recorded))

    def check_ports(self, parts: list[str]) -> None:
        for part, var in PARTS:
            if part in parts and not port_is_free(
                _port_of(self.settings, part), self.settings.host
            ):
                port = _port_of(self.settings, part)
                raise StartupError(f"port {port} ({var}, for {part}) is already in use")

    def start_servers(self, data_dir: Path) -> Settings:
        settings = self.settings
        credentials = self.credentials = _credentials(data_dir)
        if settings.database_url is None:
            self.say("• starting embedded PostgreSQL …")
            self.postgres = PostgresServer(
                data_dir / "postgres", password=credentials["postgres_password"]
            )
            self.postgres.start()
            # The marker is the data folder as its command line names it (under root from a
            # private folder, the cluster lives elsewhere: crivline.embedded).
            self.record_pid(data_dir, "postgres", self.postgres.pid, str(self.postgres.cluster))
            asyncio.run(_ensure_database(self.postgres.url, DATABASE))
            owner = self.postgres.url_for(DATABASE)
            settings = settings.with_(database_url=Secret(owner))
            # Each part as its own least-privilege login (crivline.roles), made by the
            # migration step below; fresh passwords each run.
            settings = settings.with_(**{
                f"{part}_database_url": Secret(role_url(owner, group, secrets.token_urlsafe(24)))
                for part, group in GROUPS.items()
                if getattr(settings, f"{part}_database_url") is None
            })  # fmt: skip
            self.say(f"  PostgreSQL {redact_url(owner)} (data {data_dir / 'postgres'})")
        if settings.redis_url is None:
            self.say("• starting embedded Valkey …")
            self.valkey = ValkeyServer(data_dir / "valkey", password=credentials["valkey_password"])
            self.valkey.start()
            self.record_pid(data_dir, "valkey", self.valkey.pid, "valkey-server")
            settings = settings.with_(redis_url=Secret(self.valkey.url))
            self.say(f"  Valkey {redact_url(self.valkey.url)}")
        return settings

    def start_part(self, part: str, settings: Settings, data_dir: Path) -> None:
        log_path = data_dir / "logs" / f"{part}.log"
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path.parent.chmod(0o700)
        env = {**os.environ, **settings.environ()}
        with open(open_private(log_path), "ab") as log:  # 0600: for the operator only
            proc = subprocess.Popen(
                [sys.executable, "-m", "crivline", part],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.children[part] = proc
        self.record_pid(data_dir, part, proc.pid, f"crivline {part}")
        port = _port_of(settings, part)
        deadline = time.monotonic() + 30
        while port_is_free(port, settings.host):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise StartupError(f"{part} exited during start-up: {' '.join(tail)}")
            if time.monotonic() > deadline:
                raise StartupError(f"{part} did not listen on port {port} within 30s")
            time.sleep(0.05)
        self.say(f"  {part:8} http://{settings.host}:{port}   (log {log_path})")

    # -- run -----------------------------------------------------------------------------

    def run(self) -> int:
        data_dir = self.prepare_data_dir()
        self.acquire_lock(data_dir)
        self.reap_leftovers(data_dir)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            parts = available_parts()
            self.check_ports(parts)
            settings = self.start_servers(data_dir)
            applied = asyncio.run(_migrate(settings.require_database(), settings))
            self.say(f"• migrations: {', '.join(applied) if applied else 'up to date'}")
            demo = asyncio.run(_seed(settings.require_database(), data_dir))
            self.say(f"• demo tenant {demo['tenant']!r}, project {demo['project']!r}")
            if "control" in parts and "syncd" in parts and settings.edge_credential is None:
                # syncd reports this edge's usage to the local control.
                credential = asyncio.run(_edge_credential(settings))
                settings = settings.with_(
                    control_url=f"http://{settings.host}:{settings.control_port}",
                    edge_credential=Secret(credential),
                )
            for part in parts:
                if self._stop.is_set():
                    return 0
                self.start_part(part, settings, data_dir)
            stack_file = self.write_stack_json(data_dir, settings, parts, demo)
            self.print_next_steps(settings, parts, demo, stack_file)
            return self.wait(settings, data_dir)
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        # Start-up steps are bounded; the stack stops as soon as the current one ends.
        self._stop.set()

    def wait(self, settings: Settings, data_dir: Path) -> int:
        """Watch everything started until Ctrl-C/SIGTERM: what exits is started again (and
        reaped: no zombie is left); what keeps exiting stops the stack (exit code 1)."""
        while not self._stop.wait(0.25):
            failure = self.supervise(settings, data_dir)
            if failure is not None:
                self.say(failure)
                return 1
        self.say("\n• stopping …")
        return 0

    def supervise(self, settings: Settings, data_dir: Path) -> str | None:
        """One look at every server and part; the message to stop with, if any."""
        servers: list[tuple[str, PostgresServer | ValkeyServer | None, str]] = [
            ("postgres", self.postgres, str(self.postgres.cluster) if self.postgres else ""),
            ("valkey", self.valkey, "valkey-server"),
        ]
        for key, server, marker in servers:
            if server is None or server.proc is None or server.proc.poll() is None:
                continue  # poll() reaps an exited server: no <defunct> is left
            what = f"embedded {server.name} (port {server.port})"
            self.say(f"! {what} exited ({how_it_ended(server.proc.returncode)})")
            if not self._budget(key).spend(time.monotonic()):
                return self._give_up(what, key, server.log_path)
            self.say(f"• restarting {what} on the same port and data …")
            server.kill()  # anything its process group left (PostgreSQL's backends)
            try:
                server.start()
            except StartupError as exc:
                self.say(f"! {exc}")  # it is tried again at the next look
                continue
            self.record_pid(data_dir, key, server.pid, marker)
            self.say(f"  {server.name} is back on port {server.port}")
        for part, proc in list(self.children.items()):
            if proc.poll() is None:
                continue
            self.say(f"! {part} exited ({how_it_ended(proc.returncode)})")
            if not self._budget(part).spend(time.monotonic()):
                return self._give_up(part, part, data_dir / "logs" / f"{part}.log")
            self.say(f"• restarting {part} …")
            try:
                self.start_part(part, settings, data_dir)
            except StartupError as exc:
                self.say(f"! {exc}")
        return None

    def _budget(self, key: str) -> RestartBudget:
        return self.budgets.setdefault(key, RestartBudget())

    def _give_up(self, what: str, key: str, log: Path) -> str:
        budget = self._budget(key)
        return (
            f"! {what} keeps exiting ({budget.limit} restarts within {budget.window:.0f}s); "
            f"stopping the stack — see {log}"
        )

    def shutdown(self) -> None:
        for _part, proc in reversed(list(self.children.items())):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _part, proc in reversed(list(self.children.items())):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.children.clear()
        if self.valkey is not None:
            self.valkey.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- output --------------------------------------------------------------------------

    def write_stack_json(
        self, data_dir: Path, settings: Settings, parts: list[str], demo: dict[str, Any]
    ) -> Path:
        doc = {
            "database_url": settings.require_database(),
            "redis_url": settings.require_redis(),
            "parts": {
                part: {"url": f"http://{settings.host}:{_port_of(settings, part)}",
                       "port": _port_of(settings, part)}
                for part in parts
            },
            "ports": {part: _port_of(settings, part) for part, _ in PARTS},
            "demo": demo,
            "pid": os.getpid(),
        }  # fmt: skip
        doc["credentials"] = self.credentials or _credentials(data_dir)
        path = data_dir / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # It holds the demo secrets and the servers' passwords: 0600 from its creation.
        with open(open_private(tmp, os.O_WRONLY | os.O_EXCL), "wb") as out:
            out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        tmp.replace(path)
        return path

    def print_next_steps(
        self, settings: Settings, parts: list[str], demo: dict[str, Any], stack_file: Path
    ) -> None:
        keys = demo["keys"]["development"]
        control = f"http://{settings.host}:{settings.control_port}"
        proxy = f"http://{settings.host}:{settings.proxy_port}"
        self.say()
        self.say("Crivline is up. Everything below is also in " + str(stack_file))
        self.say(f"  database      {redact_url(settings.require_database())}")
        self.say(f"  redis         {redact_url(settings.require_redis())}")
        self.say(f"  demo token    {demo['token']}")
        for env, env_keys in demo["keys"].items():
            self.say(f"  server key    {env_keys['server']}   ({env})")
            self.say(f"  client key    {env_keys['client']}   ({env})")
        self.say()
        self.say("Try:")
        if "control" in parts:
            self.say(f"  curl -s -H 'Authorization: Bearer {demo['token']}' "
                     f"{control}/api/v1/projects/{demo['project']}/flags")  # fmt: skip
        if "proxy" in parts:
            self.say(f"  curl -s -H 'Authorization: Bearer {keys['server']}' {proxy}/sdk/v1/flags")
            self.say(f"  curl -N -H 'Authorization: Bearer {keys['server']}' {proxy}/sdk/v1/stream")
            self.say(f"  curl -s -X POST -H 'Authorization: Bearer {keys['client']}' "
                     "-H 'Content-Type: application/json' "
                     "-d '{\"context\": {\"targetingKey\": \"u1\", \"email\": \"a@example.com\"}}' "
                     f"{proxy}/ofrep/v1/evaluate/flags/new-checkout")  # fmt: skip
        missing = [p for p, _ in PARTS if p not in parts]
        if missing:
            self.say(f"  (not in this build yet: {', '.join(missing)})")
        self.say()
        self.say("Press Ctrl-C to stop.")


def _credentials(data_dir: Path) -> dict[str, str]:
    """This data folder's server passwords: those stack.json holds, or new random ones
    (PostgreSQL is given its password at every start, so a new one is never a lock-out;
    Valkey keeps nothing across starts)."""
    stack_file = data_dir / "stack.json"
    known: dict[str, Any] = {}
    if stack_file.exists():
        with contextlib.suppress(orjson.JSONDecodeError, OSError):
            known = orjson.loads(stack_file.read_bytes()).get("credentials") or {}
    return {
        name: str(known.get(name) or secrets.token_urlsafe(24))
        for name in ("postgres_password", "valkey_password")
    }


async def _ensure_database(server_url: str, name: str) -> None:
    conn = await _connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _connect(url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect to {redact_url(url)}: {exc}") from None
    await set_json_codecs(conn)
    return conn


async def _migrate(url: str, roles: Settings | None = None) -> list[str]:
    """Apply the migrations; with ``roles``, then the parts' logins it names."""
    conn = await _connect(url)
    try:
        applied = await migrate(conn)
        if roles is not None:
            await ensure_logins(conn, roles)
        return applied
    finally:
        await conn.close()


async def _edge_credential(settings: Settings) -> str:
    """A fresh usage credential for this edge (the previous run's are revoked)."""
    conn = await _connect(settings.require_database())
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE edge_credentials SET revoked_at = now()"
                " WHERE edge_id = $1 AND revoked_at IS NULL",
                settings.edge_id,
            )
            return await seed.issue_edge_credential(conn, settings.edge_id)
    finally:
        await conn.close()


async def _seed(url: str, data_dir: Path) -> dict[str, Any]:
    """The demo tenant's secrets: created once, then read back from stack.json."""
    conn = await _connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM tenants WHERE key = 'demo'")
        stack_file = data_dir / "stack.json"
        if exists and stack_file.exists():
            previous = orjson.loads(stack_file.read_bytes()).get("demo")
            if previous:
                return dict(previous)
        if exists:
            demo = await seed.reissue_demo_secrets(conn)
        else:
            demo = await seed.seed_demo(conn)
        return {"tenant": demo.tenant, "token": demo.token, "project": demo.project,
                "keys": demo.keys}  # fmt: skip
    finally:
        await conn.close()
