"""An operator's resync: rebuild one environment, or every one in scope, now.

``POST /admin/resync`` (:mod:`syncd.admin`) calls :meth:`Resync.run`. Each environment
goes through :meth:`syncd.replicate.Replicator.sync` — the same version-guarded write
as every other rebuild, serialised with them per environment — with no version to
wait for, so it reads Postgres and writes whatever Redis lacks. The answer comes when
every rebuild is done: per environment the version in Postgres, the version in Redis
afterwards and what happened.
"""

from __future__ import annotations

import asyncio
from typing import Any

from crivline.edge_store import EdgeStore
from crivline.envnames import FORM, find_environment, well_formed
from crivline.errors import BadRequest, FieldProblem, NotFound
from syncd.replicate import Replicator, Want
from syncd.scope import ScopedEnvironment
from syncd.source import Source
from syncd.work import finish_in_flight


class Resync:
    def __init__(
        self,
        source: Source,
        store: EdgeStore,
        replicator: Replicator,
        *,
        concurrency: int,
        grace: float,
    ) -> None:
        self._source = source
        self._store = store
        self._replicator = replicator
        self._concurrency = concurrency
        self._grace = grace

    async def _target(self, name: str) -> dict[str, ScopedEnvironment]:
        if not well_formed(name):
            raise BadRequest(
                f"environment must be {FORM}",
                problems=[FieldProblem("environment", f"not {FORM}: {name!r}")],
            )
        env = await find_environment(self._source.primary, name)
        scope = await self._source.in_scope(only=[env]) if env is not None else {}
        if env is None or env not in scope:
            raise NotFound(
                f"environment {name} is not served by this edge"
                + (" (no such environment)" if env is None else " (outside syncd's scope)")
            )
        return scope

    async def run(self, name: str | None) -> list[dict[str, Any]]:
        scope = await self._target(name) if name is not None else await self._source.in_scope()
        semaphore = asyncio.Semaphore(self._concurrency)

        async def one(env: str) -> str:
            async with semaphore:
                want = Want(0, None, None, "resync")
                outcome = await finish_in_flight(self._replicator.sync(env, want), self._grace)
                return outcome.value

        envs = sorted(scope)
        outcomes = await asyncio.gather(*(one(env) for env in envs))
        after = await self._store.versions(envs)
        return [
            {
                "environment": env,
                "name": self._replicator.names.get(env),
                "postgres": scope[env].version,
                "redis": after.get(env, 0),
                "outcome": outcome,
            }
            for env, outcome in zip(envs, outcomes, strict=True)
        ]
