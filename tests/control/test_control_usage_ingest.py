"""The usage ingestion route against a real control and Postgres: edge credentials,
exactly-once batches, today's totals in the answer, precise refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from support.control_testkit import Answer, Control

from crivline.seed import create_tenant, issue_edge_credential

ROUTE = "/edge/v1/usage"


async def _send(control: Control, credential: str, body: Any) -> Answer:
    return await control.call("POST", ROUTE, body, token=credential)


async def _env_ids(db: asyncpg.Connection, tenant_id: str) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT key, id::text AS id FROM environments WHERE tenant_id = $1", tenant_id
    )
    return {r["key"]: r["id"] for r in rows}


def _count(env: str, kind: str, n: int, day: str | None = None) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    return {"environment": env, "day": day or today, "kind": kind, "count": n}


async def _total(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT coalesce(sum(count), 0) FROM usage"))


async def test_a_batch_is_added_once_however_often_it_is_sent(
    shop: Control, db: asyncpg.Connection
) -> None:
    credential = await issue_edge_credential(db, "edge-a")
    envs = await _env_ids(db, shop.tenant_id)
    batch = {
        "sequence": 7,
        "counts": [
            _count(envs["dev"], "poll", 40),
            _count(envs["dev"], "poll", 2),  # the same row twice in one batch: summed
            _count(envs["prod"], "ofrep_bulk", 5),
            _count(envs["prod"], "stream", 3),
        ],
        "tenants": [shop.tenant_id],
    }
    first = await _send(shop, credential, batch)
    assert first.status == 200, first
    assert first.body["duplicate"] is False
    assert first.body["evaluationsToday"] == {shop.tenant_id: 47}  # streams are not evaluations
    # The answer was lost, so the edge sends it again — twice, at once.
    again = await asyncio.gather(*(_send(shop, credential, batch) for _ in range(2)))
    assert [a.body["duplicate"] for a in again] == [True, True]
    assert await _total(db) == 50
    # Another edge's sequence 7 is another batch.
    other = await issue_edge_credential(db, "edge-b")
    answer = await _send(shop, other, {**batch, "counts": [_count(envs["dev"], "poll", 1)]})
    assert answer.body == {
        **answer.body, "duplicate": False, "evaluationsToday": {shop.tenant_id: 48},
    }  # fmt: skip
    rows = await db.fetch("SELECT kind, count FROM usage ORDER BY kind, count")
    assert [(r["kind"], r["count"]) for r in rows] == [
        ("ofrep_bulk", 5), ("poll", 43), ("stream", 3),
    ]  # fmt: skip


async def test_totals_are_per_tenant_and_of_today(shop: Control, db: asyncpg.Connection) -> None:
    credential = await issue_edge_credential(db, "edge-a")
    envs = await _env_ids(db, shop.tenant_id)
    globex = await create_tenant(db, "globex")
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    batch = {
        "sequence": 1,
        "counts": [
            _count(envs["dev"], "ofrep_single", 9),
            _count(envs["dev"], "poll", 4, yesterday),
        ],
        "tenants": [shop.tenant_id, globex.id],
    }
    answer = await _send(shop, credential, batch)
    assert answer.body["evaluationsToday"] == {shop.tenant_id: 9, globex.id: 0}
    resets = datetime.fromisoformat(answer.body["resetsAt"])
    assert timedelta(0) < resets - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        (None, "send an edge credential"),
        ("crv_mgt_notanedgecredential", "send an edge credential"),
        ("crv_edg_unknown", "not valid"),
    ],
)
async def test_only_an_edge_credential_may_report(
    shop: Control, db: asyncpg.Connection, credential: str | None, says: str
) -> None:
    body = {"sequence": 1, "counts": []}
    if credential is None:
        answer = await shop.call("POST", ROUTE, body, auth=False)
    else:
        answer = await _send(shop, credential, body)
    assert answer.status == 401
    assert says in answer.problem["detail"]
    # A management token is not an edge credential either.
    assert (await _send(shop, shop.token, body)).status == 401
    assert await db.fetchval("SELECT count(*) FROM usage_batches") == 0


async def test_a_revoked_credential_is_refused(shop: Control, db: asyncpg.Connection) -> None:
    credential = await issue_edge_credential(db, "edge-a")
    await db.execute("UPDATE edge_credentials SET revoked_at = now()")
    assert (await _send(shop, credential, {"sequence": 1})).status == 401


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"counts": []}, ["sequence"]),
        ({"sequence": 0}, ["sequence"]),
        ({"sequence": 1.5}, ["sequence"]),
        ({"sequence": 1, "extra": 1}, ["extra"]),
        ({"sequence": 1, "counts": [{"environment": "x", "day": "2026-02-30", "kind": "nap",
                                     "count": 0}]},
         ["counts[0].environment", "counts[0].day", "counts[0].kind", "counts[0].count"]),
        ({"sequence": 1, "counts": [{}]}, ["counts[0]"]),
        ({"sequence": 1, "tenants": ["acme"]}, ["tenants[0]"]),
        ([], [""]),
    ],
)  # fmt: skip
async def test_a_malformed_batch_is_refused_naming_each_problem(
    shop: Control, db: asyncpg.Connection, body: Any, paths: list[str]
) -> None:
    credential = await issue_edge_credential(db, "edge-a")
    answer = await _send(shop, credential, body)
    assert answer.status == 400
    assert answer.problem_paths() == paths
    assert await db.fetchval("SELECT count(*) FROM usage_batches") == 0
