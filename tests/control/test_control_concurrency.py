"""Concurrent writers on one flag state: no lost update, one winner per revision, and
exactly one audit row and one NOTIFY per committed change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
from support.control_testkit import Control

from crivline.keyspace import PG_CHANNEL

STATE = "/projects/shop/flags/checkout/environments/prod"
WRITERS = 8
ROUNDS = 5


class Notifications:
    """Everything NOTIFY sends on crivline_changes, in arrival order."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._queue.put_nowait(orjson.loads(payload))

    async def until(self, predicate: Callable[[list[dict[str, Any]]], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not predicate(self.payloads):
                self.payloads.append(await self._queue.get())


async def test_one_winner_per_revision(
    shop: Control, database_url: str, db: asyncpg.Connection
) -> None:
    prod = str(await db.fetchval("SELECT id FROM environments WHERE key = 'prod'"))
    dev = str(await db.fetchval("SELECT id FROM environments WHERE key = 'dev'"))
    listener = await asyncpg.connect(database_url)
    notes = Notifications()
    await listener.add_listener(PG_CHANNEL, notes)
    try:
        # Everyone read revision 1 and writes against it: exactly one may win.
        racers = await asyncio.gather(*(
            shop.put(STATE, {"state": "ENABLED", "targeting": {"==": ["racer", i]}},
                     headers={"If-Match": '"1"'})
            for i in range(WRITERS)
        ))  # fmt: skip
        assert sorted(r.status for r in racers) == [200] + [412] * (WRITERS - 1)
        assert {r.problem["currentRevision"] for r in racers if r.status == 412} == {2}

        wins = await asyncio.gather(*(writer(shop, i) for i in range(WRITERS)))
        commits = [w for ws in wins for w in ws] + [r.body for r in racers if r.status == 200]

        # Each revision was won by exactly one writer, in commit order of versions.
        commits.sort(key=lambda c: c["revision"])
        assert [c["revision"] for c in commits] == list(range(2, 2 + len(commits)))
        versions = [c["environmentVersion"] for c in commits]
        assert versions == sorted(set(versions))  # strictly increasing
        final = (await shop.get(STATE)).body
        assert final["targeting"] == commits[-1]["targeting"]  # no update was lost

        audit_rows = await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'flag_environment.update'"
        )
        assert audit_rows == len(commits)
        # A change to dev, after all of them: once its NOTIFY is here, every earlier one
        # is too (one connection receives notifications in commit order).
        await shop.put("/projects/shop/flags/checkout/environments/dev", {"state": "ENABLED"})
        await notes.until(lambda ps: any(p["e"] == dev for p in ps), within=10)
        on_prod = [p for p in notes.payloads if p["e"] == prod]
        assert len(on_prod) == len(commits)
        assert [p["v"] for p in on_prod] == versions
    finally:
        await listener.close()


async def writer(shop: Control, me: int) -> list[dict[str, Any]]:
    """Read, write with If-Match, and on 412 read again: ROUNDS committed changes."""
    committed: list[dict[str, Any]] = []
    while len(committed) < ROUNDS:
        current = await shop.get(STATE)
        body = {"state": "ENABLED", "targeting": {"==": [me, len(committed)]}}
        answer = await shop.put(STATE, body, headers={"If-Match": current.headers["ETag"]})
        # Every body differs from every other, so a 200 is always a committed change.
        if answer.status == 200:
            assert answer.body["revision"] == current.body["revision"] + 1
            committed.append(answer.body)
        else:
            assert answer.status == 412, answer
    return committed
