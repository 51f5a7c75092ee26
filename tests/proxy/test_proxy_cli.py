"""``crivline proxy`` as an operator runs it: a real process, SIGTERM, ``--workers``."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
from support.edgekit import Feeder, Key, SSEClient, flag, make_key, new_env
from support.proxyprocs import proxy_env, start_workers
from support.waiting import eventually

from crivline.embedded import free_port


async def served(url: str, key: Key) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + "/sdk/v1/flags", headers=key.headers) as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def wait_exit(proc: asyncio.subprocess.Process, within: float) -> int:
    return await asyncio.wait_for(proc.wait(), within)


async def test_proxy_command_serves_and_exits_0_on_sigterm_telling_streams_to_reconnect(
    feeder: Feeder,
    redis_url: str,
    crivline_cmd: list[str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key])
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd,
        "proxy",
        env=proxy_env(redis_url, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    await eventually(lambda: served(url, key), within=20, what="the proxy to serve")

    async with aiohttp.ClientSession() as session:
        response = await session.get(url + "/sdk/v1/stream", headers=key.headers)
        stream = SSEClient(response)
        assert (await stream.next_event()).event == "put"
        proc.send_signal(signal.SIGTERM)
        raw = await stream.closed(within=10)
    assert raw.endswith(b"retry: 250\n\n: this proxy is shutting down; reconnect\n\n")
    assert await wait_exit(proc, 15) == 0
    assert proc.stderr is not None
    err = await proc.stderr.read()
    assert b"Traceback" not in err
    assert b"proxy stopped" in err


async def test_workers_share_the_port_and_the_ticket_secret_and_stop_cleanly(
    tmp_path: Path,
    feeder: Feeder,
    redis_url: str,
    crivline_cmd: list[str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    env, key = new_env(), make_key("client")
    server = make_key("server")
    await feeder.write(env, {"a": flag({"on": True}, "on")}, keys=[key, server])
    port = free_port()
    log = tmp_path / "proxy.log"
    proc = await start_workers(crivline_cmd, proxy_env(redis_url, port), log, processes)
    url = f"http://127.0.0.1:{port}"
    await eventually(lambda: served(url, server), within=10, what="the workers to serve")

    # A ticket issued by one worker opens a stream on whichever worker a new connection
    # reaches: they share the secret through Redis.
    async def eventstreams_url() -> str | None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url + "/ofrep/v1/evaluate/flags", json={"context": {}}, headers=key.headers
            ) as response,
        ):
            body = await response.json()
            streams = body.get("eventStreams")
            return str(streams[0]["url"]) if streams else None

    stream_url = await eventually(eventstreams_url, within=10, what="an eventStreams URL")
    for _ in range(16):  # new connections: the kernel spreads them over both workers
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(stream_url) as response,
        ):
            assert response.status == 200
            assert await response.content.readany() == b"retry: 2000\n\n"

    proc.send_signal(signal.SIGTERM)
    code = await wait_exit(proc, 30)
    err = log.read_bytes()
    assert code == 0, err.decode()[-4000:]
    assert err.count(b'"proxy stopped"') == 2
    assert b"Traceback" not in err


async def test_a_taken_port_is_one_clear_line_and_exit_1(
    redis_url: str, crivline_cmd: list[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines, stderr = await _refused_start(crivline_cmd, proxy_env(redis_url, port))
    assert lines == [
        f"crivline proxy: error: cannot listen on 127.0.0.1:{port} (CRIVLINE_PROXY_PORT): "
        "Address already in use"
    ]
    assert "Traceback" not in stderr


def test_the_worker_module_is_what_the_supervisor_runs() -> None:
    assert sys.executable
    result = subprocess.run(
        [sys.executable, "-c", "import proxy.worker, proxy.supervisor"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_a_host_that_does_not_resolve_is_named_as_the_cause(
    redis_url: str, crivline_cmd: list[str]
) -> None:
    lines, stderr = await _refused_start(
        crivline_cmd, proxy_env(redis_url, 18999, CRIVLINE_HOST="bogus.invalid")
    )
    assert len(lines) == 1, stderr
    assert "the host 'bogus.invalid' (CRIVLINE_HOST) does not resolve" in lines[0]
    assert "CRIVLINE_PROXY_PORT" not in lines[0]
    assert "Traceback" not in stderr


async def _refused_start(crivline_cmd: list[str], env: dict[str, str]) -> tuple[list[str], str]:
    """``crivline proxy`` that must refuse to start: its exit code is 1; the lines of
    stderr that are not JSON log records, and the whole of stderr."""
    proc = await asyncio.create_subprocess_exec(
        *crivline_cmd, "proxy", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, raw = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    stderr = raw.decode()
    return [line for line in stderr.splitlines() if not line.startswith("{")], stderr
