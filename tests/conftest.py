"""The test harness: real PostgreSQL and Valkey servers that the suite starts itself.

- ``pg_server`` / ``valkey_server`` (session): the server processes, from the embedded
  packages, on free ports. Tests may ``stop()``, ``kill()`` and ``start()`` them to
  inject faults; the next test finds them running again. With
  ``CRIVLINE_TEST_DATABASE_URL`` / ``CRIVLINE_TEST_REDIS_URL`` set, those servers are
  used instead (and fault-injection tests skip).
- ``pg_standby`` (session, on first use): a streaming standby of ``pg_server`` made with
  ``pg_basebackup``; every test database appears on it too (``support.standby.standby_url_for``).
- ``database_url`` (per test): a fresh database cloned from a migrated template.
- ``redis_url`` (per test): the Valkey server, flushed.
- ``db`` / ``redis``: clients on those (``db`` as the owner, to seed and inspect).
- The parts connect as their own login roles (``support.roles.part_url``), made on the
  template by :func:`crivline.roles.ensure_login`.

Every async exception that nobody awaited fails the test that caused it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from crivline.embedded import PostgresServer, PostgresStandby, ValkeyServer
from crivline.migrate import migrate
from crivline.roles import GROUPS, ensure_login
from crivline.snapshot import set_json_codecs

# The proxy and control kits' fixtures (feeder, start_proxy, open_stream, central),
# for every area that runs a proxy.
pytest_plugins = ["support.edgekit", "support.proxyprocs"]

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TEMPLATE_DB = "crivline_template"


def shared_path(*parts: str) -> Path:
    """A path in ../shared, or a skip saying why the test cannot run without it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is absent: the public conformance data lives beside the repository "
            "in CI, not in a user's clone"
        )
    return path


@dataclass
class ExternalServer:
    """A server given by URL: usable, but not ours to stop."""

    url: str

    def running(self) -> bool:
        return True

    def start(self) -> None:
        return None


def _require_own(server: Any) -> Any:
    if isinstance(server, ExternalServer):
        pytest.skip("fault injection needs servers the suite started itself")
    return server


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: another pytest session on the machine resets that
    # folder's mode and prunes it, which would pull the data away from a running server.
    path = Path(tempfile.mkdtemp(prefix="crivline-servers-"))
    # Our own folder: others may pass through (not list it), so a PostgreSQL run as its
    # own user under root reaches its data here (crivline.embedded, RUNTIME_ROOT).
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(work_dir: Path) -> Iterator[PostgresServer | ExternalServer]:
    url = os.environ.get("CRIVLINE_TEST_DATABASE_URL")
    if url:
        yield ExternalServer(url)
        return
    server = PostgresServer(work_dir / "postgres", durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def valkey_server(work_dir: Path) -> Iterator[ValkeyServer | ExternalServer]:
    url = os.environ.get("CRIVLINE_TEST_REDIS_URL")
    if url:
        yield ExternalServer(url)
        return
    server = ValkeyServer(work_dir / "valkey")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_standby(pg_server: Any, work_dir: Path) -> Iterator[PostgresStandby]:
    """A hot standby streaming from the suite's PostgreSQL (its own server only)."""
    primary = _require_own(pg_server)
    if not primary.running():
        primary.start()
    standby = PostgresStandby(work_dir / "standby", primary, durable=False)
    standby.start()
    try:
        yield standby
    finally:
        standby.stop()


@pytest.fixture
def postgres(pg_server: Any) -> PostgresServer:
    """The Postgres process itself, for tests that stop, kill and restart it."""
    return _require_own(pg_server)  # type: ignore[no-any-return]


@pytest.fixture
def valkey(valkey_server: Any) -> ValkeyServer:
    """The Valkey process itself, for tests that stop, kill and restart it."""
    return _require_own(valkey_server)  # type: ignore[no-any-return]


def _server_url(server: Any, database: str) -> str:
    if isinstance(server, ExternalServer):
        base, _, _ = server.url.rpartition("/")
        return f"{base}/{database}"
    return str(server.url_for(database))


@pytest.fixture(scope="session")
async def template_database(pg_server: Any) -> str:
    admin = await asyncpg.connect(_server_url(pg_server, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_server_url(pg_server, TEMPLATE_DB))
    try:
        await migrate(conn)
        # The parts' logins (cluster-wide roles): each group role logs in as itself.
        for part, group in GROUPS.items():
            await ensure_login(conn, part, group, None)
    finally:
        await conn.close()
    return TEMPLATE_DB


_db_numbers = itertools.count(1)


@pytest.fixture
async def database_url(pg_server: Any, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    if not pg_server.running():
        pg_server.start()  # an earlier test stopped or killed it
    name = f"test_{os.getpid()}_{next(_db_numbers)}"
    admin = await asyncpg.connect(_server_url(pg_server, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield _server_url(pg_server, name)
    if not pg_server.running():
        pg_server.start()
    admin = await asyncpg.connect(_server_url(pg_server, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await set_json_codecs(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def redis_url(valkey_server: Any) -> AsyncIterator[str]:
    """The test Valkey, empty."""
    if not valkey_server.running():
        valkey_server.start()
    client = aioredis.from_url(valkey_server.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    return str(valkey_server.url)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
async def _fail_on_unhandled_async_errors() -> AsyncIterator[None]:
    """An exception in a task nobody awaited fails the test, loudly."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    if errors:
        shown = "; ".join(str(e.get("exception") or e.get("message")) for e in errors)
        pytest.fail(f"unhandled exception(s) in the event loop: {shown}")


@pytest.fixture
def crivline_cmd() -> list[str]:
    """argv prefix that runs this checkout's ``crivline`` command."""
    return [sys.executable, "-m", "crivline"]
