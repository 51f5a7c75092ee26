"""``crivline control`` as an operator runs it: a real process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import aiohttp
import pytest

from crivline.embedded import free_port


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(values)
    return env


async def _answered(url: str, within: float) -> int:
    """The status of the first answer from ``url`` (retrying while nothing listens)."""
    async with asyncio.timeout(within), aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    return resp.status
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)  # the process is still starting: try again


async def test_starts_serves_and_stops_cleanly_on_sigterm(
    crivline_cmd: list[str], database_url: str
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd, "control",
        env=_env(CRIVLINE_DATABASE_URL=database_url, CRIVLINE_CONTROL_PORT=str(port)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert await _answered(f"http://127.0.0.1:{port}/readyz", within=30) == 200
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert b"control listening" in stderr


async def _one_line_failure(crivline_cmd: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd, "control", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1
    text = stderr.decode()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if not line.startswith("{")]  # JSON log lines
    assert len(lines) == 1, text
    return lines[0]


async def test_a_port_in_use_is_one_clear_line(crivline_cmd: list[str], database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(CRIVLINE_DATABASE_URL=database_url, CRIVLINE_CONTROL_PORT=str(port))
        line = await _one_line_failure(crivline_cmd, env)
    assert f"cannot listen on 127.0.0.1:{port}" in line


@pytest.mark.parametrize("password", ["s3cret"])
async def test_an_unreachable_database_is_one_clear_line(
    crivline_cmd: list[str], password: str
) -> None:
    url = f"postgresql://postgres:{password}@127.0.0.1:{free_port()}/crivline"
    line = await _one_line_failure(crivline_cmd, _env(CRIVLINE_DATABASE_URL=url))
    assert "cannot connect to postgresql://postgres:***@127.0.0.1" in line
    assert password not in line
