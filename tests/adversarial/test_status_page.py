"""The status page's sign-in, attacked: signing out ends the session on the
server side (a copy of the cookie is refused by every process of the edge), failed
sign-ins are limited per client address, and a short operator token is refused at
start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
import pytest
from support.edgekit import RunningProxy, StartProxy
from world import OPERATOR_TOKEN, World

from crivline.errors import ConfigError
from crivline.settings import Settings
from proxy.routes.status_session import COOKIE


async def _sign_in(
    proxy: RunningProxy, token: str, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponse:
    return await proxy.post(
        "/status", data={"token": token}, headers=headers or {}, allow_redirects=False
    )


async def _cookie(proxy: RunningProxy) -> str:
    response = await _sign_in(proxy, OPERATOR_TOKEN)
    assert response.status == 303
    return response.cookies[COOKIE].value


async def _data(proxy: RunningProxy, cookie: str) -> int:
    async with (
        aiohttp.ClientSession() as fresh,
        fresh.get(proxy.url + "/status/data", headers={"Cookie": f"{COOKIE}={cookie}"}) as response,
    ):
        return response.status


async def test_signing_out_ends_the_session_at_every_process(
    world: World, start_proxy: StartProxy
) -> None:
    sibling = await start_proxy(operator_token=OPERATOR_TOKEN)
    proxy = world.proxy
    cookie, other = await _cookie(proxy), await _cookie(proxy)
    assert await _data(proxy, cookie) == 200
    assert await _data(sibling, cookie) == 200
    out = await proxy.post(
        "/status",
        data={"logout": "1"},
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    )
    assert out.status == 303
    # The browser forgets the cookie; a copy of it is refused here and at the sibling.
    assert await _data(proxy, cookie) == 401
    assert await _data(sibling, cookie) == 401
    assert await _data(proxy, other) == 200  # another session goes on


async def test_failed_sign_ins_are_limited_per_client_address(
    world: World, start_proxy: StartProxy
) -> None:
    proxy = await start_proxy(operator_token=OPERATOR_TOKEN, trust_forwarded=True)
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    for _ in range(3):
        assert (await _sign_in(proxy, "not-the-token", attacker)).status == 401
    for _ in range(2):
        wrong = await proxy.get(
            "/status/data", headers={**attacker, "Authorization": "Bearer not-the-token"}
        )
        assert wrong.status == 401
    # Five failures: the address must wait, whatever it sends now.
    refused = await _sign_in(proxy, OPERATOR_TOKEN, attacker)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in (await refused.text()).lower()
    bearer = await proxy.get(
        "/status/data", headers={**attacker, "Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    assert bearer.status == 429
    assert "too many failed sign-ins" in (await bearer.json())["errorDetails"]
    # Another address signs in as usual.
    assert (
        await _sign_in(proxy, OPERATOR_TOKEN, {"X-Forwarded-For": "198.51.100.2"})
    ).status == 303


def test_a_short_operator_token_is_refused_at_start_up(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="CRIVLINE_OPERATOR_TOKEN must be at least 16"):
        Settings.from_env({"CRIVLINE_OPERATOR_TOKEN": "short"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIVLINE_")}
    env.update(CRIVLINE_OPERATOR_TOKEN="op-secret", CRIVLINE_REDIS_URL=redis_url)
    result = subprocess.run(
        [sys.executable, "-m", "crivline", "proxy"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "CRIVLINE_OPERATOR_TOKEN must be at least 16 characters" in lines[0]
    assert "op-secret" not in result.stderr
