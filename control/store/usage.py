"""Usage batches from the edges into the central ``usage`` table, each exactly once.

One transaction per batch: the (edge, sequence) row first — a batch already added
meets the primary key and adds nothing (a concurrent duplicate waits for the first one's
commit, then finds it) — then the counts, summed into their (tenant, day, environment,
kind) rows. Rows are upserted in key order, so two edges adding to the same rows queue
instead of deadlocking. Counts for an environment that no longer exists are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import asyncpg

from crivline.plans import EVALUATION_KINDS
from crivline.usage import Batch

# A batch spans tenants and is authenticated by an edge credential, not by a tenant:
# control's role reaches usage across tenants only through these two functions
# (migration 0005), which take each row's tenant from its environment.
_ADD = "SELECT crivline_add_usage($1::uuid[], $2::date[], $3::text[], $4::bigint[])"

_TODAY = """
SELECT tenant_id::text AS tenant, total FROM crivline_usage_totals($1::uuid[], $2, $3::text[])
"""


@dataclass(frozen=True, slots=True)
class Ingested:
    duplicate: bool  # this (edge, sequence) had been added before: nothing added now
    evaluations_today: dict[str, int]  # tenant id -> central total of today


async def ingest(conn: asyncpg.Connection, edge_id: str, batch: Batch, today: date) -> Ingested:
    """Add ``batch`` once (in its own transaction), and read the asked tenants' totals."""
    async with conn.transaction():
        fresh = await conn.fetchval(
            """INSERT INTO usage_batches (edge_id, sequence) VALUES ($1, $2)
               ON CONFLICT DO NOTHING RETURNING true""",
            edge_id,
            batch.sequence,
        )
        if fresh and batch.counts:
            await conn.execute(
                _ADD,
                [c.environment_id for c in batch.counts],
                [c.day for c in batch.counts],
                [c.kind for c in batch.counts],
                [c.count for c in batch.counts],
            )
    totals = {t: 0 for t in batch.tenants}
    if batch.tenants:
        for row in await conn.fetch(_TODAY, list(batch.tenants), today, list(EVALUATION_KINDS)):
            totals[row["tenant"]] = row["total"]
    return Ingested(duplicate=not fresh, evaluations_today=totals)


async def edge_of(conn: asyncpg.Connection, token_hash: bytes) -> str | None:
    """The edge a live credential belongs to."""
    edge: str | None = await conn.fetchval(
        "SELECT edge_id FROM edge_credentials WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )
    return edge
