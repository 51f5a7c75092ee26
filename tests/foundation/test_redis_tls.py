"""The edge Redis over TLS with an ACL user: syncd syncs through it; a wrong CA or a wrong
password stops syncd with one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from support.valkeyha import AclValkey, Certificates, TlsFront, make_certificates
from support.waiting import eventually

from crivline import redisconn
from crivline.embedded import free_port
from crivline.keyspace import Keyspace

PASSWORD = "edge-secret-1"

pytestmark = pytest.mark.timeout(120)


@dataclass
class Tls:
    front: TlsFront
    certs: Certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def tls(tmp_path: Path, certs: Certificates) -> AsyncIterator[Tls]:
    valkey = AclValkey(tmp_path / "valkey", PASSWORD)
    await asyncio.to_thread(valkey.start)
    front = TlsFront(valkey.port, certs)
    await front.start()
    try:
        yield Tls(front, certs)
    finally:
        await front.stop()
        await asyncio.to_thread(valkey.stop)


def _environ(database_url: str, redis_url: str, ca: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(
        CRIVLINE_DATABASE_URL=database_url,
        CRIVLINE_REDIS_URL=redis_url,
        CRIVLINE_REDIS_TLS_CA_FILE=str(ca),
        CRIVLINE_SYNCD_PORT=str(port),
        CRIVLINE_EDGE_ID="tls-edge",
    )
    return env


async def _run_syncd(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crivline",
        "syncd",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_syncd_syncs_over_tls_with_an_acl_user(tls: Tls, database_url: str) -> None:
    port = free_port()
    url = tls.front.url(PASSWORD)
    proc = await _run_syncd(_environ(database_url, url, tls.certs.ca, port))
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if proc.returncode is not None:  # it stopped: say why, do not wait on
                    assert proc.stderr is not None
                    why = (await proc.stderr.read()).decode(errors="replace")[-2000:]
                    raise AssertionError(f"syncd exited ({proc.returncode}): {why}")
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    return response.status == 200

            await eventually(ready, 60, "syncd ready over TLS", tolerate=(aiohttp.ClientError,))
        client = redisconn.client(
            redisconn.parse("CRIVLINE_REDIS_URL", url), tls=redisconn.TlsFiles(tls.certs.ca)
        )
        try:
            state = await client.hgetall(Keyspace("crivline:", "tls-edge").sync_state)
        finally:
            await client.aclose()
        assert b"epoch" in state  # a full sync went through the TLS connection
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


@pytest.mark.parametrize("wrong", ["ca", "password"])
async def test_a_wrong_ca_or_password_is_one_line(tls: Tls, database_url: str, wrong: str) -> None:
    ca = tls.certs.other_ca if wrong == "ca" else tls.certs.ca
    password = "not-the-password" if wrong == "password" else PASSWORD
    env = _environ(database_url, tls.front.url(password), ca, free_port())
    proc = await _run_syncd(env)
    async with asyncio.timeout(60):
        stdout, stderr = await proc.communicate()
    assert proc.returncode != 0
    text = stderr.decode()
    assert "Traceback" not in text + stdout.decode()
    # Besides its JSON log lines, syncd says one thing: why it stopped.
    lines = [line for line in text.strip().splitlines() if not line.startswith("{")]
    assert len(lines) == 1, lines
    expected = "certificate is not trusted" if wrong == "ca" else "authentication failed"
    assert expected in lines[0]
    assert "cannot connect to rediss://edge:***@127.0.0.1" in lines[0]
    assert password not in text
