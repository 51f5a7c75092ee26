"""Real ``crivline`` processes for tests (re-exported by ``conftest.py``): the proxy's
environment, and the ``processes`` fixture that kills and reaps whatever a test started."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from support.edgekit import EDGE, PREFIX


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


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.communicate(), 10)  # reaps it and closes its pipes
