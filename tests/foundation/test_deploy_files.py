"""docs/deploy: the systemd units and the two-edge example, started exactly as they say.

Without systemd: each unit's ``ExecStart`` and ``EnvironmentFile`` lines are read (with
``%i`` the edge), the environment files parsed as systemd parses them, and the parts
started with that command line and that environment. Only what names this machine's
servers differs — the database, bus and Redis addresses, the ports (free ones), and
control's address as the edges reach it — and each of those must be a setting the files
set. Then both edges serve the central state, and a write reaches both.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from support.waiting import eventually

from crivline import seed
from crivline.embedded import ValkeyServer, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
EXAMPLE = DEPLOY / "two-edges"
ETC = "/etc/crivline/"
CRIVLINE = "/opt/crivline/.venv/bin/crivline"
EDGES = ("eu", "us")

pytestmark = pytest.mark.timeout(180)


@dataclass
class Unit:
    exec_start: list[str]
    environment_files: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)


def _specifiers(text: str, instance: str | None) -> str:
    if instance is not None:
        text = text.replace("%i", instance)
    return text.replace("%%", "%")


def parse_unit(path: Path, instance: str | None = None) -> Unit:
    """The [Service] lines a start depends on: ExecStart, EnvironmentFile, Environment."""
    section = ""
    exec_start: list[str] = []
    files: list[str] = []
    environment: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if section != "Service":
            continue
        value = _specifiers(value, instance)
        if key == "ExecStart":
            assert not exec_start, f"{path.name}: one ExecStart"
            exec_start = shlex.split(value.lstrip("-@:+!"))
        elif key == "EnvironmentFile":
            files.append(value)
        elif key == "Environment":
            for assignment in shlex.split(value):
                name, _, setting = assignment.partition("=")
                environment[name] = setting
    assert exec_start, f"{path.name} has no ExecStart"
    return Unit(exec_start, files, environment)


def parse_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads them (comments, optional quotes)."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def unit_environment(unit: Unit) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in unit.environment_files:
        optional = name.startswith("-")
        name = name.removeprefix("-")
        assert name.startswith(ETC), f"environment files live in {ETC}: {name}"
        path = EXAMPLE / name.removeprefix(ETC)
        if optional and not path.exists():
            continue
        env.update(parse_environment_file(path))
    env.update(unit.environment)
    return env


def units() -> list[tuple[str, str | None]]:
    """(unit file, instance) for every unit in the two-edge example."""
    return [("crivline-control.service", None)] + [
        (f"crivline-{part}@.service", edge) for edge in EDGES for part in ("syncd", "proxy")
    ]


def test_every_unit_and_environment_file_is_used() -> None:
    shipped = {p.name for p in DEPLOY.glob("*.service")}
    assert shipped == {name for name, _ in units()}
    read = {
        Path(f.removeprefix("-")).name
        for name, instance in units()
        for f in parse_unit(DEPLOY / name, instance).environment_files
    }
    assert read == {p.name for p in EXAMPLE.glob("*.env")}


@dataclass
class Started:
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"{name} exited ({proc.returncode}):\n{tail}")


@pytest.fixture
async def edge_valkeys(tmp_path: Path) -> AsyncIterator[dict[str, ValkeyServer]]:
    servers = {edge: ValkeyServer(tmp_path / f"valkey-{edge}") for edge in EDGES}
    try:
        for server in servers.values():
            await asyncio.to_thread(server.start)
        yield servers
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.stop)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Started]:
    out = Started()
    try:
        yield out
    finally:
        for _name, proc, _log in out.procs:
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, _log in out.procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:
        return subprocess.Popen(
            argv, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


async def _status(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, dict]:
    try:
        async with session.get(url, **kw) as response:  # type: ignore[arg-type]
            await response.read()
            return response.status, dict(response.headers)
    except (aiohttp.ClientError, OSError):
        return 0, {}


async def test_the_two_edge_example_runs_as_the_units_say(
    crivline_cmd: list[str],
    database_url: str,
    db: asyncpg.Connection,
    redis_url: str,
    edge_valkeys: dict[str, ValkeyServer],
    started: Started,
    tmp_path: Path,
) -> None:
    demo = await seed.seed_demo(db)

    ports = {"control": free_port()} | {
        f"{part}-{edge}": free_port() for edge in EDGES for part in ("syncd", "proxy")
    }
    control_url = f"http://127.0.0.1:{ports['control']}"

    def this_machine(part: str, edge: str | None) -> dict[str, str]:
        """The addresses of this machine's servers, for the settings the files name."""
        where = f"{part}-{edge}" if edge else part
        out = {
            "CRIVLINE_DATABASE_URL": database_url,
            "CRIVLINE_BUS_URL": redis_url,
            "CRIVLINE_CONTROL_URL": control_url,
            f"CRIVLINE_{part.upper()}_PORT": str(ports[where]),
        }
        if edge is not None:
            out["CRIVLINE_REDIS_URL"] = edge_valkeys[edge].url
        return out

    for name, instance in units():
        unit = parse_unit(DEPLOY / name, instance)
        assert unit.exec_start[0] == CRIVLINE, unit.exec_start
        part = unit.exec_start[1]
        from_files = unit_environment(unit)
        local = {k: v for k, v in this_machine(part, instance).items() if k in from_files}
        assert f"CRIVLINE_{part.upper()}_PORT" in local, f"{name} names no port"
        if instance is not None:
            assert from_files["CRIVLINE_EDGE_ID"] == instance
            assert "CRIVLINE_REDIS_URL" in local
        if part in ("control", "syncd"):
            assert "CRIVLINE_DATABASE_URL" in local
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
        env |= from_files | local
        log = tmp_path / f"{name.replace('@', '-' + (instance or ''))}.log"
        proc = _spawn([*crivline_cmd, *unit.exec_start[1:]], env, log)
        started.procs.append((f"{name} ({instance})", proc, log))

    keys = demo.keys["development"]
    auth = {"Authorization": f"Bearer {keys['server']}"}
    proxies = {edge: f"http://127.0.0.1:{ports[f'proxy-{edge}']}" for edge in EDGES}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        def ready(url: str) -> Callable[[], object]:
            async def check() -> bool:
                started.check_alive()
                return (await _status(session, url))[0] == 200

            return check

        await eventually(ready(f"{control_url}/readyz"), 60, "control ready", every=0.2)
        for edge in EDGES:
            syncd = f"http://127.0.0.1:{ports[f'syncd-{edge}']}/readyz"
            await eventually(ready(syncd), 60, f"syncd {edge} ready", every=0.2)
            await eventually(ready(f"{proxies[edge]}/readyz"), 60, f"proxy {edge} ready", every=0.2)

        async def versions() -> set[str]:
            seen = set()
            for url in proxies.values():
                status, headers = await _status(session, f"{url}/sdk/v1/flags", headers=auth)
                assert status == 200, (url, status)
                seen.add(headers["Crivline-Version"])
            return seen

        (before,) = await versions()
        # A write through control reaches both edges (the bus and syncd, as configured).
        management = {"Authorization": f"Bearer {demo.token}"}
        flag = {
            "key": "deploy-check",
            "type": "boolean",
            "name": "Deploy check",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
        }
        async with session.post(
            f"{control_url}/api/v1/projects/{demo.project}/flags", json=flag, headers=management
        ) as response:
            assert response.status == 201, await response.text()

        async def moved_on() -> bool:
            seen = await versions()
            return len(seen) == 1 and seen != {before}

        await eventually(moved_on, 15, "both edges at the new version", every=0.1)
