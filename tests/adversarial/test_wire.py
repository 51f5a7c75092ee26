"""What reaches a part before any route: malformed requests, floods of them, too many
connections, readers that stop reading (:mod:`crivline.wire`).

The log tests run ``crivline proxy`` and ``crivline control`` as real processes (the
fault suite's :class:`Part`) and read what they write; the connection tests open raw
sockets against a proxy of the adversarial world.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from faults.fault_cluster import Part
from support.edgekit import StartProxy
from support.waiting import eventually
from world import World

from crivline import tokens
from crivline.embedded import free_port
from crivline.wire import GATE


async def _healthy(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
        return response.status in (200, 503)


@contextlib.asynccontextmanager
async def _running(part: Part) -> AsyncIterator[Part]:
    part.start()
    try:
        await eventually(
            lambda: _healthy(part.url),
            within=60,
            what=f"{part.name} answering",
            tolerate=(aiohttp.ClientError, OSError),
        )
        yield part
    finally:
        await part.stop()


@pytest.fixture(params=["proxy", "control", "syncd"])
async def part(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, database_url: str
) -> AsyncIterator[Part]:
    """A real ``crivline proxy``, ``control`` or ``syncd`` process, logging to a file."""
    port = free_port()
    name = request.param
    settings = {
        "proxy": {"CRIVLINE_REDIS_URL": redis_url, "CRIVLINE_PROXY_PORT": str(port)},
        "control": {"CRIVLINE_DATABASE_URL": database_url, "CRIVLINE_CONTROL_PORT": str(port)},
        "syncd": {
            "CRIVLINE_DATABASE_URL": database_url,
            "CRIVLINE_REDIS_URL": redis_url,
            "CRIVLINE_SYNCD_PORT": str(port),
        },
    }[name]
    settings["CRIVLINE_EDGE_ID"] = "wire"
    async with _running(Part(name, name, port, settings, tmp_path / f"{name}.log")) as running:
        yield running


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _check_format(part: Part, status: int, headers: dict[str, str], body: bytes) -> None:
    document = orjson.loads(body)
    if part.command == "proxy":
        assert headers["content-type"].startswith("application/json"), headers
        assert document["errorCode"], document
        assert len(document["errorDetails"]) > 5, document
    else:
        assert headers["content-type"].startswith("application/problem+json"), headers
        assert document["status"] == status, document
        assert document["detail"], document


def _refusals(part: Part) -> list[dict[str, object]]:
    lines = part.log_path.read_text(errors="replace").splitlines()
    entries = [orjson.loads(line) for line in lines if line.startswith("{")]
    return [e for e in entries if e.get("event") == "request refused before routing"]


def _secret_requests(secret: str) -> list[bytes]:
    """The probe's request (a key header, then a line ending in a bare LF) and kin."""
    return [
        b"GET /sdk/v1/flags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + secret.encode()
        + b"\r\n\nX: y\r\n\r\n",
        b"GET /api/v1/projects HTTP/1.1\r\nHost: x\r\nX-API-Key: "
        + secret.encode()
        + b"\x01\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret.encode() + b"\r\n\x00: y\r\n\r\n",
        b"GET /x?key=" + secret.encode() + b" HTTP/1.1 junk\r\nHost: x\r\n\r\n",
    ]


async def test_a_key_in_a_malformed_request_reaches_no_log_and_no_answer(part: Part) -> None:
    """Found by an outside probe: a key header followed by a bare ``\\nX: y`` line put
    the key into proxy.log and control.log, and the 400 was text/plain echoing it."""
    kind = tokens.SecretKind.SERVER if part.command == "proxy" else tokens.SecretKind.MANAGEMENT
    secret = tokens.generate(kind)
    requests = _secret_requests(secret)
    for raw in requests:
        status, headers, body = _split(await _exchange(part.port, raw))
        assert status == 400, (raw, headers, body)
        _check_format(part, status, headers, body)
        assert secret[8:20].encode() not in body
    # One line per refused request, and nothing of the secret in the whole log.
    await eventually(lambda: len(_refusals(part)) == len(requests), what="one line per request")
    await part.stop()
    text = part.log_path.read_text(errors="replace")
    assert secret[8:20] not in text, text
    assert "Traceback" not in text
    assert len(_refusals(part)) == len(requests)


@pytest.mark.parametrize(
    "target",
    [b"CONNECT example.com:443", b"CONNECT /sdk/v1/flags", b"GET http://example.com"],
)
async def test_a_target_without_a_path_with_a_non_utf8_expect_is_a_400(
    part: Part, target: bytes
) -> None:
    """aiohttp answered these with its fixed 500 text."""
    for expect in (b"\xff\xfe", b"\xc3\x28", b"*"):
        raw = target + b" HTTP/1.1\r\nHost: x\r\nExpect: " + expect + b"\r\n\r\n"
        status, headers, body = _split(await _exchange(part.port, raw))
        assert status in (400, 417), (raw, status, body)
        assert status == 400 or expect == b"*"
        _check_format(part, status, headers, body)


async def test_a_flood_of_malformed_requests_is_a_few_lines_and_a_summary(part: Part) -> None:
    flood = 300
    garbage = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n"

    async def one() -> None:
        status, _, _ = _split(await _exchange(part.port, garbage))
        assert status == 400

    for start in range(0, flood, 50):
        await asyncio.gather(*(one() for _ in range(min(50, flood - start))))
    summary = re.compile(r'"event":"more requests refused before routing than logged"')

    def summarised() -> list[dict[str, object]]:
        lines = part.log_path.read_text(errors="replace").splitlines()
        return [orjson.loads(line) for line in lines if summary.search(line)]

    summaries = await eventually(summarised, within=30, what="the flood's summary line")
    logged = len(_refusals(part))
    assert 1 <= logged <= 10 * 4, logged  # at most the burst per window the flood spanned
    assert sum(int(str(s["unlogged"])) for s in summaries) + logged == flood


# -- connections -----------------------------------------------------------------------


async def _idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_the_connection_cap_refuses_counts_and_turns_streams_away_first(
    world: World, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(max_connections=10)
    gate = proxy[GATE]
    port = int(proxy.url.rsplit(":", 1)[1])
    idle = [await _idle(port) for _ in range(9)]
    await eventually(lambda: gate.open == 9, what="nine connections accepted")
    # Near the cap: a stream is refused 503 + Retry-After, ordinary requests still pass.
    stream = (
        b"GET /sdk/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + world.acme.key().encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = _split(await _exchange(port, stream))
    assert status == 503, (status, headers, body)
    assert headers.get("retry-after"), headers
    assert b"CRIVLINE_MAX_CONNECTIONS" in body
    flags = b"GET /sdk/v1/flags HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    flags += world.acme.key().encode() + b"\r\nConnection: close\r\n\r\n"
    status, _, _ = _split(await _exchange(port, flags))
    assert status == 200
    # At the cap: a new connection gets the ready-made 503 and is closed.
    idle.append(await _idle(port))
    await eventually(lambda: gate.open == 10, what="ten connections accepted")
    refused_before = gate.refused
    answer = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = _split(answer)
    assert status == 503, answer
    assert headers["retry-after"] == "1", answer
    assert gate.refused == refused_before + 1
    for _, writer in idle:
        writer.close()
    await eventually(lambda: gate.open == 0, what="the idle connections gone")
    metrics = await (await proxy.get("/metrics")).text()
    assert f"crivline_proxy_connections_refused_total {float(gate.refused)}" in metrics


async def test_a_reader_that_stops_reading_an_ordinary_answer_is_cut_off(
    world: World, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(write_timeout=1.0)
    gate = proxy[GATE]
    port = int(proxy.url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(request * 3000)  # pipelined, never read
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    await eventually(lambda: gate.write_timeouts >= 1, within=30, what="the write timeout")
    # The server let go of it; others are served meanwhile.
    response = await proxy.get("/healthz")
    assert response.status in (200, 503)
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 20):
            pass
    writer.close()
    metrics = await (await proxy.get("/metrics")).text()
    assert "crivline_proxy_write_timeouts_total 1.0" in metrics


async def test_the_cap_and_the_write_timeout_in_a_real_proxy_process(
    tmp_path: Path, redis_url: str
) -> None:
    """The same on ``crivline proxy`` itself (its event loop is uvloop's)."""
    port = free_port()
    settings = {
        "CRIVLINE_REDIS_URL": redis_url,
        "CRIVLINE_PROXY_PORT": str(port),
        "CRIVLINE_EDGE_ID": "wire",
        "CRIVLINE_MAX_CONNECTIONS": "6",
        "CRIVLINE_WRITE_TIMEOUT": "1",
    }
    async with _running(Part("proxy", "proxy", port, settings, tmp_path / "p.log")) as proxy:

        async def metric(name: str) -> float:
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            answer = await _exchange(port, request)
            for line in answer.decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            raise AssertionError(f"{name} not in /metrics")

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await eventually(
            lambda: metric("crivline_proxy_write_timeouts_total"),
            within=30,
            what="the write timeout",
            tolerate=(AssertionError, OSError),
        )
        writer.close()
        idle = [await _idle(port) for _ in range(6)]
        answer = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"Retry-After: 1" in answer
        for _, idle_writer in idle:
            idle_writer.close()
        refused = await eventually(
            lambda: metric("crivline_proxy_connections_refused_total"),
            what="/metrics served again",
            tolerate=(AssertionError, OSError, ValueError, IndexError),
        )
        assert refused >= 1
        assert proxy.running()


@pytest.mark.parametrize("part", ["proxy", "control"], indirect=True)
async def test_proxy_and_control_count_their_connections_in_metrics(part: Part) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _, body = _split(await _exchange(part.port, request))
    assert status == 200
    prefix = f"crivline_{part.command}_"
    for name in ("connections_open", "connections_refused_total", "write_timeouts_total"):
        assert (prefix + name).encode() in body, name
