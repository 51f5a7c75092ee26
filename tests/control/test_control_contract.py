"""Contract fuzzing: schemathesis drives the running server from its own /openapi.json.

Every response must match the document (status, headers, content type, schema), no
request may cause a 5xx, malformed requests must be refused and well-formed ones not.
The data is the demo tenant, whose objects the document's examples name, so the
examples phase reaches real flags, environments and segments. The run is bounded
(examples per operation, fixed seed) to keep it near half a minute.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from support.control_testkit import control_settings

from control.app import create_app
from crivline.seed import seed_demo

HERE = Path(__file__).resolve().parent
ST = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 25


@pytest.fixture
async def demo_server(database_url: str, db: asyncpg.Connection) -> AsyncIterator[tuple[str, str]]:
    demo = await seed_demo(db)
    # With a webhook secret, so the Stripe route is live (and refuses what is unsigned).
    settings = control_settings(database_url, stripe_webhook_secret="whsec_contract")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url(""))
    # The segment the document's examples name, so its routes meet a real one.
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {demo.token}"}) as client,
        client.put(
            f"{base}/api/v1/projects/demo-app/segments/pro-users",
            json={"definition": {"in": [{"var": "plan"}, ["pro", "enterprise"]]}},
        ) as created,
    ):
        assert created.status == 201
    try:
        yield base, demo.token
    finally:
        await server.close()


@pytest.mark.timeout(180)  # ~35 operations; under a loaded machine well over a minute
async def test_the_server_keeps_its_openapi_document(
    demo_server: tuple[str, str], tmp_path: Path
) -> None:
    base, token = demo_server
    proc = await asyncio.create_subprocess_exec(
        str(ST), "--config-file", str(HERE / "schemathesis.toml"), "--no-color",
        "run", f"{base}/openapi.json",
        "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "20251121",
        "--phases", "examples,coverage,fuzzing", "--workers", "1",
        "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )  # fmt: skip
    async with asyncio.timeout(160):
        output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-8000:]
