"""The ``crivline`` command as an operator runs it: real processes, real servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions
from support.valkeyha import SentinelGroup, cli

from crivline import tokens
from crivline.embedded import RUNTIME_ROOT, free_port
from crivline.errors import StartupError
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.up import Stack


def run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    full_env.update(env or {})
    return subprocess.run(
        argv, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0]


def test_bad_setting_is_one_line_naming_the_variable(crivline_cmd: list[str]) -> None:
    result = run([*crivline_cmd, "migrate"], {"CRIVLINE_PROXY_PORT": "eighty"})
    assert_one_clear_line(result, "CRIVLINE_PROXY_PORT", "eighty")


def test_missing_database_url_is_named(crivline_cmd: list[str]) -> None:
    result = run([*crivline_cmd, "migrate"])
    assert_one_clear_line(result, "CRIVLINE_DATABASE_URL is not set")


def test_unreachable_database_is_one_line(crivline_cmd: list[str]) -> None:
    url = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/crivline"
    result = run([*crivline_cmd, "migrate"], {"CRIVLINE_DATABASE_URL": url})
    assert_one_clear_line(result, "cannot connect to postgresql://postgres:***@127.0.0.1")
    assert ":pw@" not in result.stderr


def test_migrate_and_tenant_create(crivline_cmd: list[str], database_url: str) -> None:
    env = {"CRIVLINE_DATABASE_URL": database_url}
    migrated = run([*crivline_cmd, "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout

    created = run([*crivline_cmd, "tenant", "create", "acme", "--name", "Acme Inc"], env)
    assert created.returncode == 0, created.stderr
    token = next(w for w in created.stdout.split() if w.startswith("crv_mgt_"))

    again = run([*crivline_cmd, "tenant", "create", "acme"], env)
    assert_one_clear_line(again, "already exists")
    bad = run([*crivline_cmd, "tenant", "create", "Not Valid!"], env)
    assert_one_clear_line(bad, "not valid")

    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT t.name, m.token_hash FROM tenants t JOIN management_tokens m"
                " ON m.tenant_id = t.id WHERE t.key = 'acme'"
            )
        finally:
            await conn.close()
        assert row["name"] == "Acme Inc"
        assert bytes(row["token_hash"]) == tokens.digest(token)

    asyncio.run(check())


def test_tenant_plans_from_the_command_line(crivline_cmd: list[str], database_url: str) -> None:
    env = {"CRIVLINE_DATABASE_URL": database_url}
    created = run([*crivline_cmd, "tenant", "create", "initech", "--plan", "pro"], env)
    assert created.returncode == 0, created.stderr
    assert "on the pro plan" in created.stdout
    moved = run([*crivline_cmd, "tenant", "plan", "initech", "enterprise"], env)
    assert moved.returncode == 0, moved.stderr
    assert "plan pro -> enterprise" in moved.stdout
    same = run([*crivline_cmd, "tenant", "plan", "initech", "enterprise"], env)
    assert "already on the enterprise plan" in same.stdout
    assert_one_clear_line(
        run([*crivline_cmd, "tenant", "plan", "initech", "gold"], env),
        "no plan 'gold' (plans: enterprise, free, pro)",
    )
    assert_one_clear_line(run([*crivline_cmd, "tenant", "plan", "nobody", "pro"], env), "nobody")
    assert_one_clear_line(
        run([*crivline_cmd, "tenant", "create", "hooli", "--plan", "gold"], env), "no plan"
    )

    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            tier = await conn.fetchval(
                "SELECT s.plan_tier FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id"
                " WHERE t.key = 'initech'"
            )
            actions = await conn.fetch(
                "SELECT a.actor, a.after FROM audit_log a JOIN tenants t ON t.id = a.tenant_id"
                " WHERE t.key = 'initech' AND a.action = 'plan.set' ORDER BY a.id"
            )
            hooli = await conn.fetchval("SELECT count(*) FROM tenants WHERE key = 'hooli'")
        finally:
            await conn.close()
        assert tier == "enterprise"
        assert [orjson.loads(a["after"])["tier"] for a in actions] == ["pro", "enterprise"]
        assert actions[-1]["actor"] == "cli:tenant-plan"
        assert hooli == 0  # a refused plan leaves no tenant behind

    asyncio.run(check())


def _up_env() -> dict[str, str]:
    return {
        "CRIVLINE_PROXY_PORT": str(free_port()),
        "CRIVLINE_CONTROL_PORT": str(free_port()),
        "CRIVLINE_SYNCD_PORT": str(free_port()),
        "XDG_RUNTIME_DIR": "/tmp",
    }


def _start_up(
    crivline_cmd: list[str], data_dir: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    full_env.update(env)
    return subprocess.Popen(
        [*crivline_cmd, "up", "--data-dir", str(data_dir)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_stack(proc: subprocess.Popen[str], data_dir: Path, timeout: float = 60) -> dict:
    stack_file = data_dir / "stack.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack_file.exists():
            return orjson.loads(stack_file.read_bytes())
        if proc.poll() is not None:
            pytest.fail(f"crivline up exited early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.05)
    pytest.fail("stack.json was not written in time")


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _check_private_stack(data_dir: Path, stack: dict) -> None:
    """The local stack is not open to other local users."""
    assert (data_dir / "stack.json").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "logs").stat().st_mode & 0o077 == 0
    logs = [*(data_dir / "logs").glob("*.log"), data_dir / "postgres.log"]
    logs.append(data_dir / "valkey" / "valkey.log")
    for log in logs:
        assert log.stat().st_mode & 0o077 == 0, log
    # Passwords: Postgres over TCP needs it (SCRAM), Valkey too (requirepass).
    credentials = stack["credentials"]
    assert credentials["postgres_password"] in stack["database_url"]
    assert credentials["valkey_password"] in stack["redis_url"]
    bare_db = stack["database_url"].replace(":" + credentials["postgres_password"], "")
    bare_redis = stack["redis_url"].replace(":" + credentials["valkey_password"] + "@", "")

    async def check() -> None:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(bare_db.replace("postgres@", "postgres:guess@"), timeout=10)
        with pytest.raises((asyncpg.InvalidAuthorizationSpecificationError, asyncpg.PostgresError)):
            await asyncpg.connect(bare_db, timeout=10)
        conn = await asyncpg.connect(stack["database_url"], timeout=10)
        await conn.close()
        client = aioredis.from_url(bare_redis)
        try:
            with pytest.raises(redis_exceptions.AuthenticationError):
                await client.set("crivline:made-up-key", "1")
        finally:
            await client.aclose()
        authed = aioredis.from_url(stack["redis_url"])
        try:
            assert await authed.ping()
        finally:
            await authed.aclose()

    asyncio.run(check())


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[Path]:
    """A data folder under pytest's private (0700) temporary folder: as root, up runs
    PostgreSQL from there without opening it (crivline.embedded). The cluster it moved
    under RUNTIME_ROOT is removed afterwards."""
    data_dir = tmp_path / "stack"
    yield data_dir
    cluster = data_dir / "postgres"
    if cluster.is_symlink() and cluster.resolve().parent == RUNTIME_ROOT:
        shutil.rmtree(cluster.resolve(), ignore_errors=True)


@pytest.mark.timeout(180)
def test_up_runs_refuses_a_second_and_stops_cleanly(
    crivline_cmd: list[str], stack_dir: Path
) -> None:
    env = _up_env()
    data_dir = stack_dir
    ancestors = {p: p.stat().st_mode for p in data_dir.parent.resolve().parents}
    ancestors[data_dir.parent] = data_dir.parent.stat().st_mode  # private (pytest's, 0700)
    proc = _start_up(crivline_cmd, data_dir, env)
    try:
        stack = _wait_for_stack(proc, data_dir)
        # No folder above the data folder was opened up (as root too: crivline.embedded).
        assert {p: p.stat().st_mode for p in ancestors} == ancestors
        assert stack["demo"]["token"].startswith("crv_mgt_")
        assert stack["demo"]["keys"]["development"]["server"].startswith("crv_srv_")
        assert stack["ports"]["proxy"] == int(env["CRIVLINE_PROXY_PORT"])
        pids = orjson.loads((data_dir / "pids.json").read_bytes())
        assert all(_alive(entry["pid"]) for entry in pids.values())
        _check_private_stack(data_dir, stack)

        second = run([*crivline_cmd, "up", "--data-dir", str(data_dir)], env)
        assert_one_clear_line(second, "already running")

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "demo token" in out
        assert "Traceback" not in out
        assert not any(_alive(entry["pid"]) for entry in pids.values())
    finally:
        _reap(proc)


@pytest.mark.timeout(180)
def test_up_recovers_from_a_killed_run(crivline_cmd: list[str], stack_dir: Path) -> None:
    env = _up_env()
    data_dir = stack_dir
    first = _start_up(crivline_cmd, data_dir, env)
    stack = _wait_for_stack(first, data_dir)
    first.kill()  # no cleanup at all: its servers are orphaned, its lock dies with it
    _reap(first)
    (data_dir / "stack.json").rename(data_dir / "stack.old.json")
    second = _start_up(crivline_cmd, data_dir, env)
    try:
        again = _wait_for_stack(second, data_dir)
        assert again["demo"] != {}
        assert again["database_url"].rsplit("/", 1)[1] == stack["database_url"].rsplit("/", 1)[1]
        second.send_signal(signal.SIGINT)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0
        assert "left over from an earlier run" in out
    finally:
        _reap(second)


def test_up_with_an_unwritable_data_dir_is_one_line(
    crivline_cmd: list[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run([*crivline_cmd, "up", "--data-dir", str(blocker / "data")], _up_env())
    assert_one_clear_line(result, "not writable")


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = Settings.from_env({"CRIVLINE_SYNCD_PORT": str(port)}, data_dir=str(tmp_path))
        with pytest.raises(StartupError, match=f"port {port} \\(CRIVLINE_SYNCD_PORT, for syncd\\)"):
            Stack(settings).check_ports(["syncd"])


def test_bus_only_syncd_without_a_standby_or_bus_is_one_line(crivline_cmd: list[str]) -> None:
    base = {"CRIVLINE_SYNCD_BUS_ONLY": "on", "CRIVLINE_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run([*crivline_cmd, "syncd"], {**base, "CRIVLINE_BUS_URL": "redis://127.0.0.1:1/0"})
    assert_one_clear_line(result, "CRIVLINE_REPLICA_URL is not set")
    result = run([*crivline_cmd, "syncd"], {**base, "CRIVLINE_REPLICA_URL": "postgresql://x/y"})
    assert_one_clear_line(result, "CRIVLINE_BUS_URL is not set")
    result = run([*crivline_cmd, "syncd"], {**base, "CRIVLINE_SYNCD_BUS_ONLY": "maybe"})
    assert_one_clear_line(result, "CRIVLINE_SYNCD_BUS_ONLY must be on or off")


def test_relay_without_its_urls_is_one_line(crivline_cmd: list[str]) -> None:
    result = run([*crivline_cmd, "relay"], {"CRIVLINE_BUS_URL": "redis://127.0.0.1:1/0"})
    assert_one_clear_line(result, "CRIVLINE_DATABASE_URL is not set")
    result = run([*crivline_cmd, "relay"], {"CRIVLINE_DATABASE_URL": "postgresql://x/y"})
    assert_one_clear_line(result, "CRIVLINE_BUS_URL is not set")


def test_relay_port_in_use_is_named(crivline_cmd: list[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            [*crivline_cmd, "relay"],
            {
                "CRIVLINE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                "CRIVLINE_BUS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "CRIVLINE_RELAY_PORT": str(port),
            },
        )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    assert f"cannot listen on 127.0.0.1:{port} (CRIVLINE_RELAY_PORT)" in result.stderr


def test_migrate_roles_makes_least_privilege_logins(
    crivline_cmd: list[str], database_url: str
) -> None:
    owner = urlsplit(database_url)
    user = f"control_login_{os.getpid()}"
    login = database_url.replace(f"{owner.username}@", f"{user}:s3cret-pw@", 1)
    env = {"CRIVLINE_DATABASE_URL": database_url, "CRIVLINE_CONTROL_DATABASE_URL": login}
    for _ in range(2):  # idempotent: the second run finds everything in place
        done = run([*crivline_cmd, "migrate", "--roles"], env)
        assert done.returncode == 0, done.stderr
        assert f"control: login postgresql://{user}:***@" in done.stdout
        assert "s3cret-pw" not in done.stdout + done.stderr

    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            row = await conn.fetchrow(
                "SELECT rolcanlogin, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,"
                " pg_has_role(rolname, 'crivline_control', 'USAGE') AS member,"
                " pg_has_role(rolname, 'crivline_syncd', 'MEMBER') AS syncd"
                " FROM pg_roles WHERE rolname = $1",
                user,
            )
            assert dict(row) == {"rolcanlogin": True, "rolsuper": False, "rolbypassrls": False,
                                 "rolcreaterole": False, "rolcreatedb": False, "member": True,
                                 "syncd": False}  # fmt: skip
            part = await asyncpg.connect(login)
            try:  # control's policies hold for its login: no tenant, no rows
                assert await part.fetchval("SELECT count(*) FROM tenants") == 0
            finally:
                await part.close()
        finally:
            await conn.execute(f'DROP OWNED BY "{user}"')
            await conn.execute(f'DROP ROLE "{user}"')
            await conn.close()

    asyncio.run(check())


def test_migrate_roles_refuses_the_owner_and_needs_a_part(
    crivline_cmd: list[str], database_url: str
) -> None:
    env = {"CRIVLINE_DATABASE_URL": database_url}
    assert_one_clear_line(run([*crivline_cmd, "migrate", "--roles"], env),
                          "CRIVLINE_CONTROL_DATABASE_URL")  # fmt: skip
    env["CRIVLINE_SYNCD_DATABASE_URL"] = database_url
    assert_one_clear_line(run([*crivline_cmd, "migrate", "--roles"], env),
                          "CRIVLINE_SYNCD_DATABASE_URL", "owner")  # fmt: skip


@pytest.mark.timeout(180)
def test_up_uses_an_external_redis_when_only_its_url_is_set(
    crivline_cmd: list[str], stack_dir: Path, tmp_path: Path
) -> None:
    """Only CRIVLINE_REDIS_URL (here a Sentinel group): PostgreSQL is still embedded, no
    Valkey is started, and syncd fills the Redis the Sentinels name."""
    group = SentinelGroup.create(tmp_path / "sentinel", "edge")
    env = {**_up_env(), "CRIVLINE_REDIS_URL": group.url, "CRIVLINE_EDGE_ID": "up-edge"}
    proc = _start_up(crivline_cmd, stack_dir, env)
    try:
        _wait_for_stack(proc, stack_dir)
        started = set(orjson.loads((stack_dir / "pids.json").read_bytes()))
        assert "postgres" in started
        assert "valkey" not in started
        sync_state = Keyspace("crivline:", "up-edge").sync_state
        master = str(group.current_master().port)
        deadline = time.monotonic() + 60
        while cli("-p", master, "hexists", sync_state, "epoch").strip() != "1":
            assert time.monotonic() < deadline, "syncd never completed a full sync"
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "starting embedded Valkey" not in out
        assert "starting embedded PostgreSQL" in out
    finally:
        _reap(proc)
        group.stop()
