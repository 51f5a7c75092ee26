"""``CRIVLINE_TICKET_SECRET`` can be rotated without breaking open browser streams:
during the overlap a proxy signs with the new secret and still accepts tickets signed
with the one named in ``CRIVLINE_TICKET_SECRET_PREVIOUS``."""

from __future__ import annotations

import pytest
from support.edgekit import RunningProxy, StartProxy
from world import World

from crivline.errors import ConfigError
from crivline.settings import Settings

OLD, NEW = "the-secret-before-rotation", "the-secret-after-rotation"


async def _ticket_path(proxy: RunningProxy, key: str) -> str:
    async with proxy.session.post(
        proxy.url + "/ofrep/v1/evaluate/flags",
        headers={"Authorization": f"Bearer {key}"},
        json={},
    ) as response:
        assert response.status == 200
        url: str = (await response.json())["eventStreams"][0]["url"]
    return url.removeprefix(proxy.url)


async def _opens(proxy: RunningProxy, path: str) -> int:
    async with proxy.session.get(proxy.url + path) as response:
        return response.status  # the stream closes with the response


async def test_two_secrets_are_accepted_during_the_overlap(
    world: World, start_proxy: StartProxy
) -> None:
    before = await start_proxy(ticket_secret=OLD)
    during = await start_proxy(ticket_secret=NEW, ticket_secret_previous=OLD)
    after = await start_proxy(ticket_secret=NEW)
    key = world.acme.key("dev", "client")
    old_ticket = await _ticket_path(before, key)
    new_ticket = await _ticket_path(during, key)
    assert old_ticket != new_ticket  # the overlap signs with the new secret
    assert await _opens(during, old_ticket) == 200
    assert await _opens(during, new_ticket) == 200
    assert await _opens(after, new_ticket) == 200
    assert await _opens(after, old_ticket) == 401  # the overlap is over
    assert await _opens(before, new_ticket) == 401


def test_a_previous_secret_without_a_current_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="CRIVLINE_TICKET_SECRET_PREVIOUS"):
        Settings.from_env({"CRIVLINE_TICKET_SECRET_PREVIOUS": OLD})
