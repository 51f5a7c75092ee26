"""Tenant and environment isolation at the edge: a key of tenant A, environment X reads,
evaluates and streams exactly X — never B, never A's environment Y — on every proxy
route, in bulk, on both stream kinds, and through stream tickets (a ticket names one
environment and one key; a forged, tampered, foreign or expired one is refused).

Both tenants use the same project, environment, flag and segment names, and every
environment's targeting carries its own marker, so a mix-up would show. The control
API's side (another tenant's objects are 404 on every route and stay unchanged) is
``tests/control/test_control_isolation.py``; its fuzzer here
(``test_fuzz_control.py``) checks the same on hostile requests.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from support.edgekit import SSEClient
from world import ENVS, KINDS, TENANTS, World, marker

from crivline import sse
from proxy import appkeys
from proxy.tickets import TicketSigner

OpenStream = Callable[..., Awaitable[SSEClient]]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def control_flagset(world: World, tenant: str, env: str) -> tuple[bytes, int, int]:
    """The flag set control shows, its version and the flag set's version (what ETags
    and stream ids name: the keys created after the flags did not move it)."""
    t = world.tenants[tenant]
    async with world.central.session.get(
        f"{world.central.url}/api/v1/projects/shop/environments/{env}/flagset",
        headers=auth(t.token),
    ) as response:
        assert response.status == 200
        return (
            await response.read(),
            int(response.headers["ETag"].strip('"')),
            int(response.headers["Crivline-Flags-Version"]),
        )


async def test_every_key_reads_exactly_its_own_environment(
    world: World, open_stream: OpenStream
) -> None:
    proxy = world.proxy
    for tenant in TENANTS:
        for env in ENVS:
            flag_set, version, flags_version = await control_flagset(world, tenant, env)
            for kind in KINDS:
                key = world.tenants[tenant].key(env, kind)
                where = (tenant, env, kind)
                # Polling: byte for byte what control serves for this environment.
                async with proxy.session.get(proxy.url + "/sdk/v1/flags", headers=auth(key)) as r:
                    if kind == "client":
                        assert r.status == 403, where
                    else:
                        assert r.status == 200, where
                        assert await r.read() == flag_set, where
                        assert r.headers["Crivline-Version"] == str(version)
                        etag = r.headers["ETag"]
                        assert etag.startswith(f'"{flags_version}-'), (where, etag)
                # Evaluation: the marker of this environment matches; any other does not.
                for other_tenant in TENANTS:
                    for other_env in ENVS:
                        context = {"email": marker(other_tenant, other_env)}
                        hit = (other_tenant, other_env) == (tenant, env)
                        want = f"{tenant}-{env}-{'b' if hit else 'a'}-value"
                        async with proxy.session.post(
                            proxy.url + "/ofrep/v1/evaluate/flags/checkout",
                            headers=auth(key), json={"context": context},
                        ) as r:  # fmt: skip
                            assert (await r.json())["value"] == want, (where, context)
                        async with proxy.session.post(
                            proxy.url + "/ofrep/v1/evaluate/flags",
                            headers=auth(key), json={"context": context},
                        ) as r:  # fmt: skip
                            body = await r.json()
                            values = {f["key"]: f.get("value") for f in body["flags"]}
                            assert values == {"checkout": want, "hostile": False}, where
                # Streams: the put is this flag set; a refetch names this version.
                if kind == "server":
                    stream = await open_stream(proxy, "/sdk/v1/stream", headers=auth(key))
                    put = await stream.next_event()
                    assert (put.event, put.id) == ("put", str(flags_version))
                    assert orjson.loads(put.data) == orjson.loads(flag_set)
                    stream.close()
                events = await open_stream(
                    proxy, "/ofrep/v1/events", headers={**auth(key), "Last-Event-ID": "0"}
                )
                refetch = await events.next_event()
                assert refetch.id == str(flags_version), where
                assert orjson.loads(refetch.data)["etag"] == etag, where
                events.close()


async def test_management_tokens_and_api_keys_do_not_cross(world: World) -> None:
    for tenant in TENANTS:
        t = world.tenants[tenant]
        for key in t.keys.values():  # an API key is no management token
            status, _, _ = await world.api_with(key, "GET", "/projects")
            assert status == 401
        async with world.proxy.session.get(  # and a management token is no API key
            world.proxy.url + "/sdk/v1/flags", headers=auth(t.token)
        ) as response:
            assert response.status == 401


async def test_streams_carry_only_their_own_environment(
    world: World, open_stream: OpenStream
) -> None:
    """Changes to every other environment, of both tenants, then one to ours: the first
    event our streams see is ours."""
    acme = world.acme
    key = acme.key("dev", "server")
    sdk = await open_stream(world.proxy, "/sdk/v1/stream", headers=auth(key))
    put = await sdk.next_event()
    ofrep = await open_stream(world.proxy, "/ofrep/v1/events", headers=auth(key))
    await ofrep.raw_until(len(sse.retry(world.proxy.app[appkeys.OPTIONS].retry_ms)))
    ticket = await open_stream(world.proxy, await ticket_path(world, acme.key("dev", "client")))
    await ticket.raw_until(1)

    def state(tenant: str, env: str, tag: str) -> dict[str, Any]:
        rule = {"==": [{"var": "email"}, f"{marker(tenant, env)}-changed"]}
        return {"state": "ENABLED", "defaultVariant": f"{env}-{tag}", "targeting": rule}

    for tenant, env in (("acme", "prod"), ("globex", "dev"), ("globex", "prod")):
        path = f"/projects/shop/flags/checkout/environments/{env}"
        await world.ok(world.tenants[tenant], "PUT", path, state(tenant, env, "b"))
    answer = await world.ok(
        acme, "PUT", "/projects/shop/flags/checkout/environments/dev", state("acme", "dev", "b")
    )
    ours = str(answer["environmentVersion"])
    patch = await sdk.next_event()
    assert (patch.event, patch.id) == ("patch", ours), patch
    assert orjson.loads(patch.data)["base"] == int(put.id or 0)
    assert "acme-dev-marker-changed" in patch.data
    for other in (marker("acme", "prod"), "globex"):  # (variants are per flag, not per env)
        assert other not in patch.data
    for stream in (ofrep, ticket):
        event = await stream.next_event()
        assert event.id == ours, event
        assert orjson.loads(event.data)["type"] == "refetchEvaluation"


async def ticket_path(world: World, key: str) -> str:
    async with world.proxy.session.post(
        world.proxy.url + "/ofrep/v1/evaluate/flags", headers=auth(key), json={}
    ) as response:
        url: str = (await response.json())["eventStreams"][0]["url"]
    assert key not in url  # the key never travels in a URL
    return url.removeprefix(world.proxy.url)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_tickets_open_exactly_their_environment(world: World) -> None:
    proxy, acme = world.proxy, world.acme
    signer: TicketSigner = proxy.app[appkeys.TICKETS]
    dev_key, prod_key = acme.key("dev", "client"), acme.key("prod", "client")
    good = await ticket_path(world, dev_key)
    ticket = good.split("ticket=", 1)[1]
    payload_text, mac_text = ticket.split(".")
    payload, mac = _unb64(payload_text), _unb64(mac_text)

    async def status(path: str, **kwargs: Any) -> int:
        async with proxy.session.get(proxy.url + path, **kwargs) as response:
            if response.status != 200:
                body = await response.json()
                assert body["errorCode"] == "UNAUTHORIZED", body
            return response.status

    assert await status(good) == 200
    # The ticket is the credential: another tenant's key beside it changes nothing.
    assert await status(good, headers=auth(world.globex.key())) == 200
    forged = []
    for i in range(len(payload)):  # every single-byte change of the signed content
        changed = bytearray(payload)
        changed[i] ^= 0x01
        forged.append(f"{_b64(bytes(changed))}.{mac_text}")
    flipped = bytearray(mac)
    flipped[0] ^= 0x80
    forged += [f"{payload_text}.{_b64(bytes(flipped))}", f"{payload_text}.", f".{mac_text}",
               payload_text, f"{payload_text}.{mac_text}.x", ticket[:-1], "", "%00",
               ticket + "A", "A" * 300]  # fmt: skip
    prod_ticket = (await ticket_path(world, prod_key)).split("ticket=", 1)[1]
    forged.append(f"{prod_ticket.split('.')[0]}.{mac_text}")  # prod's content, dev's MAC
    now = time.time()
    dev_env, prod_env = acme.env_ids["dev"], acme.env_ids["prod"]
    dev_hash = hashlib.sha256(dev_key.encode()).hexdigest()
    prod_hash = hashlib.sha256(prod_key.encode()).hexdigest()
    # Correctly signed, but naming an environment its key does not belong to.
    forged.append(str(signer.issue(prod_env, dev_hash, 1, now)))
    forged.append(str(signer.issue(dev_env, prod_hash, 1, now)))
    forged.append(str(signer.issue(world.globex.env_ids["dev"], dev_hash, 1, now)))
    # Expired: issued three windows ago.
    forged.append(str(signer.issue(dev_env, dev_hash, 1, now - 3 * signer.window)))
    # Signed with another edge's secret.
    stranger = TicketSigner(signer.window)
    stranger.use_secret(b"another edge's secret")
    forged.append(str(stranger.issue(dev_env, dev_hash, 1, now)))
    for fake in forged:
        assert await status(f"/ofrep/v1/events?ticket={fake}") == 401, fake
    assert await status(good) == 200
