"""Fixtures for the control API tests: a real server on the per-test Postgres database.

``control`` is a running control app (aiohttp's TestServer on a free port, a real HTTP
client) with one tenant, ``acme``, whose management token the client sends by default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from support.control_testkit import Control, control_settings, start_control


@pytest.fixture
async def control(database_url: str, db: asyncpg.Connection) -> AsyncIterator[Control]:
    running = await start_control(control_settings(database_url), db)
    try:
        yield running
    finally:
        await running.client.close()


@pytest.fixture
async def shop(control: Control) -> Control:
    """``control`` with project ``shop`` (environments dev and prod) and flag ``checkout``."""
    await control.project()
    await control.flag()
    return control
