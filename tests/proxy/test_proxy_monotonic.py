"""Monotonic reads: a client that holds a newer version than the process it reaches.

Two edges on one Valkey (two keyspaces): ``ahead`` is at a version the ``behind`` edge's
syncd has not written yet — the position of a client that failed over from a sibling
process or moved to another edge. Versions are global per environment, so the client's
If-None-Match, bulk ETag or Last-Event-ID proves what it holds, and it must never be
sent anything older; an id from another history (higher than anything this stack ever
had) must still end in the current state — but only once syncd has shown it, so that an
edge that is merely a little behind is never taken for another history.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from typing import Any

import pytest
from support.edgekit import (
    EDGE,
    TEST_OPTIONS,
    Feeder,
    Key,
    RunningProxy,
    SSEClient,
    StartProxy,
    flag,
    make_key,
    new_env,
)
from support.waiting import eventually

from crivline.edge_store import EdgeStore
from crivline.keyspace import Keyspace
from proxy import appkeys

OTHER_EDGE = "edge-2"
OTHER_PREFIX = "t2:"  # another edge: its own Redis, here a keyspace of its own
WAIT = 1.0  # the proxy's bound on waiting for a version a client proved it holds
OPTIONS = replace(TEST_OPTIONS, refetch_wait_seconds=WAIT)


def flags_at(n: int) -> dict[str, object]:
    return {
        "a": flag({"on": True, "off": False}, "on" if n % 2 else "off"),
        "n": flag({"v": n}, "v"),
    }


@pytest.fixture
def other_edge(feeder: Feeder) -> Feeder:
    """syncd's writer for a second edge on the same Valkey."""
    ks = Keyspace(OTHER_PREFIX, OTHER_EDGE)
    return Feeder(feeder.redis, ks, EdgeStore(feeder.redis, ks))


async def fresh(edge: Feeder) -> None:
    """The edge is complete and syncd has just confirmed it equals Postgres."""
    await edge.synced()
    epoch = (await edge.store.sync_state()).epoch
    assert epoch is not None
    assert await edge.store.touch_reconciled(epoch)


async def reconciled(
    edge: Feeder, behind: tuple[str, ...] = (), started: float | None = None
) -> float:
    """syncd finishes one more reconciliation, which began at ``started`` (the Redis
    server's clock; default: now) and found ``behind`` older in Redis than in Postgres."""
    state = await edge.store.sync_state()
    assert state.epoch is not None
    began = await edge.store.clock() if started is None else started
    assert await edge.store.touch_reconciled(state.epoch, behind=behind, started=began)
    return began


def ahead_count(proxy: RunningProxy, outcome: str) -> float:
    registry = proxy[appkeys.METRICS].registry
    value = registry.get_sample_value("crivline_proxy_client_ahead_total", {"outcome": outcome})
    return value or 0.0


async def two_edges(
    feeder: Feeder, other_edge: Feeder, start_proxy: StartProxy, *, behind_fresh: bool
) -> tuple[str, Key, RunningProxy, RunningProxy]:
    """One environment at version 2 on the first edge and 1 on the second."""
    env, key = new_env(), make_key("server")
    for edge in (feeder, other_edge):
        await edge.write(env, flags_at(1), keys=[key])
    await feeder.write(env, flags_at(2))
    await fresh(feeder)
    if behind_fresh:
        await fresh(other_edge)
    else:
        await other_edge.synced()
        # Its syncd is not running: Redis cannot vouch for the central version.
        await other_edge.redis.delete(other_edge.keyspace.heartbeat)
    ahead = await start_proxy(OPTIONS, edge_id=EDGE)
    behind = await start_proxy(OPTIONS, edge_id=OTHER_EDGE, key_prefix=OTHER_PREFIX)
    await ahead.loaded(env, 2)
    await behind.loaded(env, 1)
    if behind_fresh:
        await eventually(behind[appkeys.STATUS].syncd_fresh, what="syncd fresh on the edge")
    return env, key, ahead, behind


# A poller's flag-set ETag and an OFREP bulk ETag both prove a version: the same tests
# run for each.
CONTEXT = {"context": {"targetingKey": "user-1"}}
ETAG_AT_2 = {
    "poll": r'"2-[0-9a-f]{16}"',
    "bulk": r'W/"2-[0-9a-f]{16}-[0-9a-f]{16}"',
}


async def ask(proxy: RunningProxy, route: str, key: Key, etag: str | None = None) -> Any:
    """A poll or a bulk evaluation, conditional on ``etag`` when given."""
    headers = {**key.headers, **({"If-None-Match": etag} if etag else {})}
    if route == "poll":
        return await proxy.get("/sdk/v1/flags", headers=headers)
    return await proxy.post("/ofrep/v1/evaluate/flags", json=CONTEXT, headers=headers)


@pytest.mark.parametrize("route", ["poll", "bulk"])
async def test_a_client_from_a_newer_edge_gets_the_newer_state_once_it_lands(
    feeder: Feeder, other_edge: Feeder, start_proxy: StartProxy, route: str
) -> None:
    env, key, ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=False)
    first = await ask(ahead, route, key)
    etag = first.headers["ETag"]
    assert re.fullmatch(ETAG_AT_2[route], etag), etag
    assert first.headers["Crivline-Version"] == "2"

    # The behind edge refreshes at once and waits; version 2 lands meanwhile.
    asking = asyncio.ensure_future(ask(behind, route, key, etag))
    await asyncio.sleep(0)
    await other_edge.write(env, flags_at(2))
    answer = await asking
    assert answer.status == 304
    assert answer.headers["ETag"] == etag
    assert answer.headers["Crivline-Version"] == "2"


@pytest.mark.parametrize("route", ["poll", "bulk"])
async def test_a_client_ahead_of_an_edge_that_cannot_catch_up_keeps_what_it_has(
    feeder: Feeder, other_edge: Feeder, start_proxy: StartProxy, route: str
) -> None:
    _env, key, ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=False)
    etag = (await ask(ahead, route, key)).headers["ETag"]
    answer = await ask(behind, route, key, etag)
    # Never version 1: a 304 for the client's own version, which it keeps.
    assert answer.status == 304
    assert answer.headers["ETag"] == etag
    assert answer.headers["Crivline-Version"] == "2"
    assert await answer.read() == b""


async def test_a_poller_from_another_history_gets_the_current_state_after_a_reconciliation(
    feeder: Feeder, other_edge: Feeder, start_proxy: StartProxy
) -> None:
    _env, key, _ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=True)
    stranger = '"999-0123456789abcdef"'
    asking = {**key.headers, "If-None-Match": stranger}
    before = await other_edge.store.clock()
    # First seen: it may be an edge that has not applied 999 yet. The client keeps it.
    answer = await behind.get("/sdk/v1/flags", headers=asking)
    assert answer.status == 304
    assert answer.headers["Crivline-Version"] == "999"
    # A reconciliation that began before the claim was first seen proves nothing.
    await reconciled(other_edge, started=before)
    answer = await behind.get("/sdk/v1/flags", headers=asking)
    assert answer.status == 304
    # One that began after it found Redis equal to Postgres, and Redis is still at 1.
    await reconciled(other_edge)
    answer = await behind.get("/sdk/v1/flags", headers=asking)
    assert answer.status == 200
    assert answer.headers["Crivline-Version"] == "1"
    assert answer.headers["ETag"].startswith('"1-')
    assert ahead_count(behind, "other history") == 1.0
    assert ahead_count(behind, "not yet") == 2.0


async def test_a_poller_on_a_fresh_edge_slightly_behind_is_not_taken_for_another_history(
    feeder: Feeder, other_edge: Feeder, start_proxy: StartProxy
) -> None:
    """The edge's syncd is alive and fresh but has not applied the client's version yet
    (the milliseconds between two edges, or a slow catch-up after a fault): the client
    waits for it, it is never sent the older state as if its version came from another
    history."""
    env, key, ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=True)
    etag = (await ahead.get("/sdk/v1/flags", headers=key.headers)).headers["ETag"]
    asking = {**key.headers, "If-None-Match": etag}
    before = await other_edge.store.clock()
    answer = await behind.get("/sdk/v1/flags", headers=asking)
    assert (answer.status, answer.headers["ETag"]) == (304, etag)
    # A reconciliation that read Postgres before version 2 finishes, then others that
    # found the environment behind and set syncd to catch up (slowly: Postgres had just
    # restarted) — none of them shows another history.
    await reconciled(other_edge, started=before)
    for _ in range(2):
        await reconciled(other_edge, behind=(env,))
        answer = await behind.get("/sdk/v1/flags", headers=asking)
        assert (answer.status, answer.headers["ETag"]) == (304, etag)
    pending = asyncio.ensure_future(behind.get("/sdk/v1/flags", headers=asking))
    await asyncio.sleep(0)
    await other_edge.write(env, flags_at(2))
    answer = await pending
    assert (answer.status, answer.headers["ETag"]) == (304, etag)
    assert answer.headers["Crivline-Version"] == "2"
    assert ahead_count(behind, "other history") == 0.0


@pytest.mark.parametrize("behind_fresh", [False, True], ids=["syncd-down", "syncd-fresh"])
async def test_a_stream_resuming_from_a_newer_edge_waits_for_that_version(
    feeder: Feeder,
    other_edge: Feeder,
    start_proxy: StartProxy,
    open_stream: object,
    behind_fresh: bool,
) -> None:
    env, key, _ahead, behind = await two_edges(
        feeder, other_edge, start_proxy, behind_fresh=behind_fresh
    )
    assert callable(open_stream)
    opening = asyncio.ensure_future(
        open_stream(behind, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "2"})
    )
    await asyncio.sleep(0)
    await other_edge.write(env, flags_at(2))
    stream: SSEClient = await opening
    assert "Crivline-Resume" not in stream.response.headers
    await other_edge.write(env, flags_at(3))
    event = await stream.next_event()
    # Nothing for versions 1 or 2 (the client holds 2): the first event takes it to 3.
    assert (event.event, event.id) == ("patch", "3"), event


@pytest.mark.parametrize("path", ["/sdk/v1/stream", "/ofrep/v1/events"])
async def test_a_stream_id_from_another_history_gets_the_current_state(
    feeder: Feeder,
    other_edge: Feeder,
    start_proxy: StartProxy,
    open_stream: object,
    path: str,
) -> None:
    env, key, _ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=True)
    assert callable(open_stream)
    opening = "put" if path.startswith("/sdk") else "message"
    resume = {**key.headers, "Last-Event-ID": "999"}
    # First seen: after the bound, the current state (never silence).
    first: SSEClient = await open_stream(behind, path, headers=resume)
    assert first.response.headers["Crivline-Resume"] == "behind"
    event = await first.next_event(within=WAIT * 5)
    assert (event.event, event.id) == (opening, "1")
    # A reconciliation later, Redis is still at 1: another history, answered at once.
    await reconciled(other_edge)
    stream: SSEClient = await open_stream(behind, path, headers=resume)
    assert stream.response.headers["Crivline-Resume"] == "other-history"
    event = await stream.next_event()
    assert (event.event, event.id) == (opening, "1")
    # And the stream goes on from there.
    await other_edge.write(env, flags_at(2))
    following = await stream.next_event()
    assert following.id == "2"


async def test_a_stream_ahead_of_an_edge_that_cannot_catch_up_gets_a_put_after_the_bound(
    feeder: Feeder,
    other_edge: Feeder,
    start_proxy: StartProxy,
    open_stream: object,
) -> None:
    _env, key, _ahead, behind = await two_edges(feeder, other_edge, start_proxy, behind_fresh=False)
    assert callable(open_stream)
    stream: SSEClient = await open_stream(
        behind, "/sdk/v1/stream", headers={**key.headers, "Last-Event-ID": "2"}
    )
    assert stream.response.headers["Crivline-Resume"] == "behind"
    event = await stream.next_event(within=WAIT * 5)
    assert (event.event, event.id) == ("put", "1")
