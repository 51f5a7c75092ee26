"""What the fuzzers found, pinned down one case at a time (each was a 500, a traceback's
worth of internals in a body, or unbounded memory before its fix)."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any

import aiohttp
import pytest
from fuzzkit import check_control, check_proxy
from rawhttp import Reply, call
from support.edgekit import StartProxy
from world import OPERATOR_TOKEN, World

from crivline.flags import compile_flag_set
from crivline.flags.semver import MAX_LENGTH, parse_version, version_of

NOT_UTF8 = b"\xc0\xaf\xff"


async def proxy_call(world: World, *args: Any, **kwargs: Any) -> Reply:
    return await asyncio.to_thread(call, world.proxy_port, *args, **kwargs)


async def control_call(world: World, *args: Any, **kwargs: Any) -> Reply:
    return await asyncio.to_thread(call, world.control_port, *args, **kwargs)


def bearer(secret: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {secret}")


async def test_status_page_takes_bytes_that_are_not_utf8(world: World) -> None:
    """A token, cookie or form that is not UTF-8 is a wrong token (401), not a 500."""
    for headers in (
        [("Authorization", b"Bearer " + NOT_UTF8)],
        [("Cookie", b"crivline_status=9999999999." + NOT_UTF8)],
        [("Cookie", "crivline_status=\u00b2\u00b2.abc".encode())],
    ):
        for path in ("/status", "/status/data"):
            reply = await proxy_call(world, "GET", path, headers)
            assert reply.status == 401, (path, headers, str(reply))
            check_proxy(reply, path)
    form = "application/x-www-form-urlencoded"
    for content_type, body in (
        (form, b"token=%ff%fe"),
        (form, b"token=" + NOT_UTF8),
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x",
         b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\n\xff\r\n--x--\r\n'),
    ):  # fmt: skip
        reply = await proxy_call(world, "POST", "/status", [("Content-Type", content_type)], body)
        assert reply.status == 401, (content_type, body, str(reply))
        assert reply.content_type == "text/html"  # the sign-in form again, with a message
    # The right token still signs in.
    good = await proxy_call(
        world, "POST", "/status", [("Content-Type", form)], f"token={OPERATOR_TOKEN}".encode()
    )
    assert good.status == 303
    assert (await proxy_call(world, "GET", "/status/data", [bearer(OPERATOR_TOKEN)])).status == 200


async def test_bodies_that_cannot_be_decoded_are_400(world: World) -> None:
    broken = [("Content-Encoding", "gzip"), ("Content-Type", "application/json")]
    key = bearer(world.acme.key("dev", "client"))
    for path in ("/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/checkout"):
        reply = await proxy_call(world, "POST", path, [key, *broken], b"{}")
        assert reply.status == 400, str(reply)
        assert "Content-Encoding" in reply.json()["errorDetails"]
        check_proxy(reply, path)
        fine = gzip.compress(b'{"context": {"targetingKey": "u1"}}')
        assert (await proxy_call(world, "POST", path, [key, *broken], fine)).status == 200
    reply = await control_call(
        world, "POST", "/api/v1/projects", [bearer(world.acme.token), *broken], b'{"key": "x"}'
    )
    assert reply.status == 400, str(reply)
    check_control(reply, "broken gzip")


async def test_a_forwarded_host_that_is_not_a_host_gets_no_stream_url(
    world: World, start_proxy: StartProxy
) -> None:
    """With CRIVLINE_TRUST_FORWARDED on, X-Forwarded-* name the origin — when they are a
    host and a scheme."""
    trusting = await start_proxy(trust_forwarded=True)
    port = int(trusting.url.rsplit(":", 1)[1])

    async def post(headers: list[tuple[str, Any]]) -> Reply:
        return await asyncio.to_thread(call, port, "POST", path, [key, *headers], b"{}")

    key = bearer(world.acme.key("dev", "client"))
    path = "/ofrep/v1/evaluate/flags"
    forwarded = [("X-Forwarded-Host", "edge.example:8443"), ("X-Forwarded-Proto", "https")]
    good = await post(forwarded)
    assert good.json()["eventStreams"][0]["url"].startswith("https://edge.example:8443/ofrep/")
    for host in (b"evil" + NOT_UTF8, b"a b", b"x/y", b'h"><script>', b"h" * 300):
        reply = await post([("X-Forwarded-Host", host)])
        assert reply.status == 200, (host, str(reply))
        assert "eventStreams" not in reply.json(), host  # no URL to offer: the client polls
    scheme = await post([("X-Forwarded-Proto", "javascript")])
    assert scheme.json()["eventStreams"][0]["url"].startswith("http://")


@pytest.mark.parametrize("service", ["proxy", "control"])
async def test_expect_headers_that_are_not_utf8(world: World, service: str) -> None:
    """aiohttp's default Expect handler answers 500 to them: ours ignores them, on every
    route and on every unknown path, and still answers 100-continue."""
    odd = ("Expect", NOT_UTF8)
    if service == "proxy":
        calls = [("GET", "/sdk/v1/flags", 401), ("POST", "/sdk/v1/flags", 405),
                 ("GET", "/nowhere", 404), ("POST", "/ofrep/v1/evaluate/flags", 401)]  # fmt: skip
        port, check = world.proxy_port, check_proxy
    else:
        calls = [("GET", "/api/v1/projects", 200), ("DELETE", "/api/v1/projects", 405),
                 ("GET", "/nowhere", 404), ("GET", "/healthz", 200)]  # fmt: skip
        port, check = world.control_port, check_control
    auth = [bearer(world.acme.token)] if service == "control" else []
    for method, path, status in calls:
        reply = await asyncio.to_thread(call, port, method, path, [odd, *auth], b"")
        assert reply.status == status, (method, path, str(reply))
        check(reply, path)
    url = world.proxy.url if service == "proxy" else world.central.url
    async with aiohttp.ClientSession() as session:
        target = "/ofrep/v1/evaluate/flags" if service == "proxy" else "/api/v1/projects"
        secret = world.acme.key() if service == "proxy" else world.acme.token
        async with session.post(
            url + target,
            json={"context": {}} if service == "proxy" else {"key": "continued"},
            headers={"Authorization": f"Bearer {secret}"},
            expect100=True,
        ) as response:
            assert response.status in (200, 201), await response.text()


async def test_numbers_that_python_cannot_read(world: World) -> None:
    """Unicode digits (² passes isdigit, not int) and 5000-digit numbers."""
    key = bearer(world.acme.key("dev", "client"))
    for query in ("flagConfigEtag=%C2%B2", "flagConfigLastModified=%C2%B2",
                  "flagConfigLastModified=0001-01-01T00:00:00%2B14:00",
                  "flagConfigEtag=" + "9" * 5000):  # fmt: skip
        reply = await proxy_call(world, "POST", f"/ofrep/v1/evaluate/flags?{query}", [key], b"{}")
        assert reply.status == 200, (query, str(reply))
    reply = await control_call(world, "GET", "/api/v1/audit?limit=" + "1" * 5000,
                               [bearer(world.acme.token)])  # fmt: skip
    assert reply.status == 400, str(reply)
    check_control(reply, "limit")


def test_versions_longer_than_any_version_are_not_parsed() -> None:
    """A 5000-digit version made int() raise inside targeting (and the caller saw
    "ValueError: Exceeds the limit…"); and each distinct long string sat in the parse
    cache, so a client could pin 4096 × 256 KiB of memory."""
    assert version_of("1." + "1" * 5000 + ".0") is None
    assert version_of("1.0.0-" + "1" * 5000) is None
    assert version_of("1.0.0-" + "a" * (MAX_LENGTH - 6)) is not None
    parse_version.cache_clear()
    for n in range(50):
        version_of(f"{n}." + "9" * 100_000)
    assert parse_version.cache_info().currsize == 0


def test_a_failing_operation_is_reported_without_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Targeting that fails answers GENERAL with a plain message; the cause is logged."""
    flags = compile_flag_set(
        {
            "flags": {
                "f": {
                    "state": "ENABLED",
                    "variants": {"a": 1, "b": 2},
                    "defaultVariant": "a",
                    "targeting": {"if": [{"sem_ver": [{"var": "v"}, ">=", "1.0.0"]}, "b", "a"]},
                }
            }
        }
    )
    assert flags.evaluate("f", {"v": "2.0.0"}).variant == "b"
    assert flags.evaluate("f", {"v": "1." + "1" * 5000}).variant == "a"  # no version: no match
    caplog.set_level(logging.ERROR, logger="crivline.flags")
    from crivline.flags import flagset

    broken = flagset._guard(lambda _ctx: 1 // 0, "f", {})  # stands for a bug in an operation
    result = broken({})
    assert result.error_code is not None
    assert result.error_message == "targeting failed on this context; it has been logged"
    assert "ZeroDivisionError" in caplog.text
