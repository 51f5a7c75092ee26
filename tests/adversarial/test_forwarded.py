"""Stream URLs are built from headers the client sends only when the operator says so:
``CRIVLINE_TRUST_FORWARDED`` for a proxy behind a load balancer that sets
``X-Forwarded-*``, and ``CRIVLINE_PUBLIC_URL`` to fix the advertised origin."""

from __future__ import annotations

from support.edgekit import RunningProxy, StartProxy
from world import World

FORGED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


async def _stream_url(proxy: RunningProxy, key: str, headers: dict[str, str]) -> str:
    response = await proxy.post(
        "/ofrep/v1/evaluate/flags",
        json={},
        headers={"Authorization": f"Bearer {key}", **headers},
    )
    assert response.status == 200
    url: str = (await response.json())["eventStreams"][0]["url"]
    return url


async def test_forwarded_headers_are_ignored_unless_trusted(world: World) -> None:
    key = world.acme.key("dev", "client")
    url = await _stream_url(world.proxy, key, {**FORGED, "Host": "evil.example"})
    assert url.startswith("http://evil.example/ofrep/v1/events?ticket=")  # its own Host
    url = await _stream_url(world.proxy, key, FORGED)
    assert url.startswith(world.proxy.url + "/ofrep/v1/events?ticket="), url


async def test_trusted_forwarded_headers_name_the_origin(
    world: World, start_proxy: StartProxy
) -> None:
    trusting = await start_proxy(trust_forwarded=True)
    url = await _stream_url(trusting, world.acme.key("dev", "client"), FORGED)
    assert url.startswith("https://evil.example/ofrep/v1/events?ticket="), url


async def test_a_public_url_is_advertised_whatever_the_headers_say(
    world: World, start_proxy: StartProxy
) -> None:
    fixed = await start_proxy(public_url="https://flags.example.com", trust_forwarded=True)
    key = world.acme.key("dev", "client")
    for headers in ({}, FORGED, {"Host": "other.example"}):
        url = await _stream_url(fixed, key, headers)
        assert url.startswith("https://flags.example.com/ofrep/v1/events?ticket="), url
