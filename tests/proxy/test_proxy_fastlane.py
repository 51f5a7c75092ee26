"""The hot routes' front door and pre-rendered answers (proxy.fastlane, proxy.prerendered).

These pin what the two rely on in aiohttp, so an aiohttp upgrade that changes it fails
here, loudly: the request's ``_match_info`` slot (what ``request.app`` and
``request.match_info`` read), and the connection handler sending a response by
``prepare`` + ``write_eof`` with ``keep_alive`` read afterwards — a pre-rendered answer
must be byte for byte what a ``web.Response`` with the same headers sends (but ``Date``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from support.edgekit import Feeder, StartProxy, flag, make_key, new_env

from crivline import httpserver
from crivline.wire import Runner
from proxy import fastlane, prerendered

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


async def exchange(port: int, raw: bytes, answers: int = 1) -> list[bytes]:
    """Send ``raw`` on one connection; the ``answers`` whole answers read back (Date
    lines blanked: they move with the clock)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        out = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            body = await reader.readexactly(int(length[1])) if length else b""
            out.append(_DATE.sub(b"\r\nDate: -\r\n", head) + body)
        return out
    finally:
        writer.close()


def request(
    method: str, target: str, *headers: str, body: bytes = b"", version: str = "1.1"
) -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: edge", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


HEADERS = {"Crivline-Version": "7", "Cache-Control": "private, no-cache", "ETag": '"7-ab"'}


@pytest.fixture
async def twins() -> AsyncIterator[int]:
    """A server answering the same status, headers and body as a web.Response
    (``/plain/…``) and pre-rendered (``/pre/…``)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        status = int(request.match_info["status"])
        body = b'{"a":1}' if status != 304 else None
        ctype = httpserver.APPLICATION_JSON if body is not None else None
        if request.match_info["kind"] == "pre":
            response = prerendered.respond(request, status, dict(HEADERS), body, ctype)
        else:
            response = web.Response(status=status, body=body, headers=HEADERS, content_type=ctype)
        response.headers["Access-Control-Allow-Origin"] = "*"  # as the middleware adds CORS
        return response

    app = web.Application()
    app.router.add_get("/{kind}/{status}", answer)
    runner = Runner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][1]
    await runner.cleanup()


@pytest.mark.parametrize("status", [200, 304, 404])
async def test_a_prerendered_answer_is_the_bytes_of_a_web_response(twins: int, status: int) -> None:
    plain = await exchange(twins, request("GET", f"/plain/{status}"))
    # Two on one connection: the connection stays open after a pre-rendered answer.
    pre = await exchange(twins, request("GET", f"/pre/{status}") * 2, answers=2)
    assert pre == plain * 2
    assert b"Connection" not in plain[0]


@pytest.mark.parametrize("extra", [(), ("Connection: close",)])
async def test_http10_and_closing_requests_get_aiohttps_own_answer(
    twins: int, extra: tuple[str, ...]
) -> None:
    version = "1.1" if extra else "1.0"
    plain = await exchange(twins, request("GET", "/plain/200", *extra, version=version))
    pre = await exchange(twins, request("GET", "/pre/200", *extra, version=version))
    assert pre == plain


def test_the_front_door_gives_a_request_the_routers_match() -> None:
    async def handler(request: web.Request) -> web.Response:
        raise AssertionError("not called")

    app = web.Application()
    app.router.add_get("/sdk/v1/flags", handler, name="sdk_flags")
    req = make_mocked_request("GET", "/sdk/v1/flags")
    req._match_info = fastlane.matched(app, "sdk_flags", "GET")
    assert req.app is app  # read through the slot the router sets
    assert req.match_info.route.name == "sdk_flags"


async def test_the_hot_routes_answer_as_the_routed_path_does(
    feeder: Feeder, start_proxy: StartProxy
) -> None:
    """The same request by the front door (a plain target) and by the router (the same
    target with a query string, which the front door leaves to the app)."""
    env, key = new_env(), make_key("server")
    await feeder.write(env, {"a": flag({"on": True, "off": False}, "on")}, keys=[key])
    await feeder.synced()
    proxy = await start_proxy()
    port = int(proxy.url.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {key.secret}"
    json = "Content-Type: application/json"
    context = b'{"context":{"targetingKey":"u1"}}'
    first = await exchange(port, request("GET", "/sdk/v1/flags", auth))
    etag = re.search(rb'ETag: ("[^"]*")', first[0])
    assert etag is not None
    cases = [
        ("GET", "/sdk/v1/flags", (auth,), b""),
        ("GET", "/sdk/v1/flags", (auth, f"If-None-Match: {etag[1].decode()}"), b""),
        ("GET", "/sdk/v1/flags", (), b""),
        ("POST", "/ofrep/v1/evaluate/flags/a", (auth, json), context),
        ("POST", "/ofrep/v1/evaluate/flags/missing", (auth, json), context),
        ("POST", "/ofrep/v1/evaluate/flags/a", (auth, json), b'{"context":'),
        ("POST", "/ofrep/v1/evaluate/flags/a", (json,), context),
    ]
    for method, path, headers, body in cases:
        fast = await exchange(port, request(method, path, *headers, body=body))
        routed = await exchange(port, request(method, path + "?via=router", *headers, body=body))
        assert fast == routed, (method, path, headers)
