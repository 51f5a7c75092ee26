"""No shared cache may hand one key's answer to another: polling, OFREP and
control answers are ``Cache-Control: private, no-cache`` with ``Vary`` on the headers a
key or token can arrive in; a private cache revalidates with the ETag."""

from __future__ import annotations

import pytest
from world import World

PROXY_VARY = {"authorization", "x-api-key"}


def _vary(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


async def test_polling_and_ofrep_answers_are_private_to_the_key(world: World) -> None:
    key = world.acme.key()
    auth = {"Authorization": f"Bearer {key}"}
    polled = await world.proxy.get("/sdk/v1/flags", headers=auth)
    assert polled.status == 200
    etag = polled.headers["ETag"]
    revalidated = await world.proxy.get(
        "/sdk/v1/flags", headers={"X-API-Key": key, "If-None-Match": etag}
    )
    assert revalidated.status == 304
    single = await world.proxy.post(
        "/ofrep/v1/evaluate/flags/checkout", json={"context": {"targetingKey": "u"}}, headers=auth
    )
    bulk = await world.proxy.post(
        "/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}}, headers=auth
    )
    again = await world.proxy.post(
        "/ofrep/v1/evaluate/flags",
        json={"context": {"targetingKey": "u"}},
        headers={**auth, "If-None-Match": bulk.headers["ETag"]},
    )
    assert [r.status for r in (single, bulk, again)] == [200, 200, 304]
    for response in (polled, revalidated, single, bulk, again):
        assert response.headers["Cache-Control"] == "private, no-cache", response
        assert _vary(response.headers.get("Vary")) >= PROXY_VARY, response


@pytest.mark.parametrize("path", ["/projects", "/nowhere"])
async def test_control_answers_are_private_to_the_token(world: World, path: str) -> None:
    status, _, headers = await world.api(world.acme, "GET", path)
    assert status in (200, 404)
    assert headers["Cache-Control"] == "private, no-cache"
    assert "authorization" in _vary(headers.get("Vary"))
