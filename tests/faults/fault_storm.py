"""The write storm: one sequential writer per tenant, all at once, through the control API.

Each writer edits flag states and targeting, flag metadata and a shared segment,
archives and restores flags, creates flags, creates API keys and revokes them — and
records every *acknowledged* write with the environment version it produced. A state
edit and a key creation answer that version themselves (``environmentVersion``); for the
others the writer reads the project's environments right after the acknowledgement.
Being the only writer of its project, and waiting for each answer, that read is exactly
the version its write produced (or the one before, for a write that changed nothing).

A write that fails — 503 while Postgres is away, a reset connection — is not
acknowledged: it may or may not have committed, so no promise is recorded for it (its
effect, if any, is still part of the central state every edge must equal). A key whose
revocation was not acknowledged is left out of the key checks for the same reason.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from fault_cluster import FLAGS, Cluster, Tenant


@dataclass(frozen=True)
class Ack:
    env: str
    version: int
    op: str
    at: float


@dataclass
class Storm:
    cluster: Cluster
    seed: int
    pace: tuple[float, float] = (0.03, 0.09)  # seconds between one writer's writes
    acks: list[Ack] = field(default_factory=list)
    revoked: list[tuple[str, str, float]] = field(default_factory=list)  # secret, env, at
    live_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> secret, env
    failures: Counter[str] = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)  # 4xx answers, for the record
    attempts: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stopped_at: float | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, max_writes: int) -> None:
        for i, tenant in enumerate(self.cluster.tenants):
            writer = _Writer(self, tenant, random.Random(f"{self.seed}/{i}"), max_writes)
            self._tasks.append(asyncio.create_task(writer.run(), name=f"writer {tenant.key}"))

    async def finish(self) -> None:
        """Stop writing; returns when every writer has its last answer."""
        if self.stopped_at is not None:
            return
        self.stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self.stopped_at = time.monotonic()

    async def until_acks(self, count: int, within: float = 30.0) -> None:
        """Wait until ``count`` more writes have been acknowledged (the storm is on)."""
        target = len(self.acks) + count
        deadline = time.monotonic() + within
        while len(self.acks) < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the storm stalled: {len(self.acks)} acknowledged writes, wanted {target} "
                    f"(failures: {dict(self.failures)})"
                )
            await asyncio.sleep(0.02)

    def acked_since(self, at: float) -> int:
        return sum(1 for a in self.acks if a.at >= at)

    def unavailable(self) -> int:
        """Writes refused because something was down (5xx, connection errors)."""
        return sum(n for what, n in self.failures.items() if not what.startswith("HTTP 4"))

    def summary(self) -> str:
        return (
            f"{len(self.acks)} versions acknowledged in {self.attempts} writes, "
            f"{len(self.revoked)} keys revoked, failures {dict(self.failures) or 'none'}"
        )


class _Unacknowledged(Exception):
    pass


@dataclass
class _Writer:
    storm: Storm
    tenant: Tenant
    rng: random.Random
    max_writes: int
    archived: set[str] = field(default_factory=set)
    created_flags: list[str] = field(default_factory=list)
    counter: int = 0

    @property
    def cluster(self) -> Cluster:
        return self.storm.cluster

    async def run(self) -> None:
        ops = [
            (self.put_state, 40),
            (self.patch_metadata, 12),
            (self.put_segment, 8),
            (self.archive_or_restore, 10),
            (self.create_flag, 3),
            (self.create_key, 9),
            (self.revoke_key, 9),
        ]
        functions = [op for op, _ in ops]
        weights = [w for _, w in ops]
        writes = 0
        while not self.storm.stop.is_set() and writes < self.max_writes:
            op = self.rng.choices(functions, weights)[0]
            writes += 1
            self.storm.attempts += 1
            self.counter += 1
            try:
                await op()
            except _Unacknowledged:
                pass
            await asyncio.sleep(self.rng.uniform(*self.storm.pace))

    # -- plumbing -------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One write; its answer if acknowledged (2xx), else raise _Unacknowledged."""
        try:
            status, answer = await self.cluster.api(self.tenant, method, path, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.storm.failures[f"connection: {type(exc).__name__}"] += 1
            raise _Unacknowledged from None
        if status not in (200, 201):
            self.storm.failures[f"HTTP {status}"] += 1
            if 400 <= status < 500:
                self.storm.refusals.append(f"{method} {path}: {status} {answer}")
            raise _Unacknowledged
        return answer

    def ack(self, env: str, version: int, op: str) -> None:
        self.storm.acks.append(Ack(env, int(version), op, time.monotonic()))

    async def ack_all(self, op: str, only: str | None = None) -> None:
        """Record the versions this tenant's environments are at now (right after our
        acknowledged write, which bumped them)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                status, answer = await self.cluster.api(
                    self.tenant, "GET", f"/projects/{self.tenant.project}/environments"
                )
                if status == 200:
                    break
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("control did not answer a read for 60 s")
            await asyncio.sleep(0.05)
        for env in answer["items"]:
            if only is None or env["id"] == only:
                self.ack(env["id"], env["version"], op)

    def env(self) -> tuple[str, str]:
        key = self.rng.choice(sorted(self.tenant.environments))
        return key, self.tenant.environments[key]

    def live_flag(self) -> str:
        candidates = [f for f in (*FLAGS, *self.created_flags) if f not in self.archived]
        return self.rng.choice(candidates)

    # -- the operations ----------------------------------------------------------------

    async def put_state(self) -> None:
        flag = self.live_flag()
        env_key, env_id = self.env()
        variants = {"banner": ["a", "b"]}.get(flag, ["on", "off"])
        if flag.startswith("new-"):
            variants = ["low", "high"]
        first, second = self.rng.sample(variants, 2)
        targeting = self.rng.choice(
            [
                None,
                {"if": [{"$ref": "beta"}, first, second]},
                {"if": [{"ends_with": [{"var": "email"}, f"@t{self.counter}.example"]}, first]},
                {"fractional": [[first, self.rng.randint(1, 99)], [second, 50]]},
            ]
        )
        body = {
            "state": self.rng.choice(["ENABLED", "ENABLED", "DISABLED"]),
            "defaultVariant": self.rng.choice([first, second, None]),
            "targeting": targeting,
        }
        path = f"/projects/{self.tenant.project}/flags/{flag}/environments/{env_key}"
        answer = await self.call("PUT", path, body)
        self.ack(env_id, answer["environmentVersion"], "state")

    async def patch_metadata(self) -> None:
        flag = self.live_flag()
        body = {"metadata": {"rev": self.counter, "team": self.rng.choice(["web", "core"])}}
        await self.call("PATCH", f"/projects/{self.tenant.project}/flags/{flag}", body)
        await self.ack_all("metadata")

    async def put_segment(self) -> None:
        plans = self.rng.sample(["free", "pro", "team", "enterprise", f"p{self.counter}"], 2)
        body = {"definition": {"in": [{"var": "plan"}, plans]}}
        await self.call("PUT", f"/projects/{self.tenant.project}/segments/beta", body)
        await self.ack_all("segment")

    async def archive_or_restore(self) -> None:
        candidates = [f for f in FLAGS if f not in ("f0", "banner")]
        flag = self.rng.choice(candidates)
        action = "restore" if flag in self.archived else "archive"
        await self.call("POST", f"/projects/{self.tenant.project}/flags/{flag}/{action}")
        if action == "archive":
            self.archived.add(flag)
        else:
            self.archived.discard(flag)
        await self.ack_all(action)

    async def create_flag(self) -> None:
        key = f"new-{self.storm.seed}-{self.counter}"
        body = {"key": key, "type": "integer", "variants": {"low": 1, "high": 100}}
        await self.call("POST", f"/projects/{self.tenant.project}/flags", body)
        self.created_flags.append(key)
        await self.ack_all("create flag")

    async def create_key(self) -> None:
        env_key, env_id = self.env()
        path = f"/projects/{self.tenant.project}/environments/{env_key}/keys"
        answer = await self.call("POST", path, {"kind": "server", "label": f"storm {self.counter}"})
        self.storm.live_keys[answer["apiKey"]["id"]] = (answer["key"], env_id)
        self.ack(env_id, answer["environmentVersion"], "create key")

    async def revoke_key(self) -> None:
        mine = [
            (key_id, secret, env)
            for key_id, (secret, env) in self.storm.live_keys.items()
            if env in self.tenant.environments.values()
        ]
        if not mine:
            await self.create_key()
            return
        key_id, secret, env_id = self.rng.choice(sorted(mine))
        env_key = next(k for k, v in self.tenant.environments.items() if v == env_id)
        path = f"/projects/{self.tenant.project}/environments/{env_key}/keys/{key_id}"
        # Whatever the answer, the key's fate is now unknown until acknowledged.
        del self.storm.live_keys[key_id]
        await self.call("DELETE", path)
        self.storm.revoked.append((secret, env_id, time.monotonic()))
        await self.ack_all("revoke key", only=env_id)
