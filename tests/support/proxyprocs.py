"""Real ``crivline`` processes for tests (re-exported by ``conftest.py``): the proxy's
environment, and the ``processes`` fixture that kills and reaps whatever a test started."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from support.edgekit import EDGE, PREFIX
from support.waiting import eventually


def environ_of(pid: int) -> dict[str, str]:
    """The environment a running process was started with (``/proc/PID/environ``)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def proxy_env(redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(
        {
            "CRIVLINE_REDIS_URL": redis_url,
            "CRIVLINE_PROXY_PORT": str(port),
            "CRIVLINE_KEY_PREFIX": PREFIX,
            "CRIVLINE_EDGE_ID": EDGE,
            **extra,
        }
    )
    return env


async def start_workers(
    crivline_cmd: Sequence[str],
    env: dict[str, str],
    log: Path,
    processes: list[asyncio.subprocess.Process],
    workers: int = 2,
) -> asyncio.subprocess.Process:
    """``crivline proxy --workers N`` (its stderr in ``log``), once every worker listens."""
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *crivline_cmd, "proxy", "--workers", str(workers), env=env,
            stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    processes.append(proc)
    await eventually(
        lambda: log.read_bytes().count(b'"proxy listening"') == workers,
        within=30,
        what=f"{workers} workers listening",
    )
    return proc


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.communicate(), 10)  # reaps it and closes its pipes
