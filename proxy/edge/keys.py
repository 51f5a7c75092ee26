"""API keys as this process knows them: a complete in-memory index of the edge's live keys.

At start-up (and after every reconnect) the proxy reads every served environment's
live-key set and each key's hash, so a request's key is found — or refused — without
touching Redis. The subscriber keeps the index current: every change announced for an
environment reloads that environment's key set (one SMEMBERS, plus the hashes of keys
it has not seen), and the keys that disappeared are handed back to the caller so their
open streams can be closed.

A key not in the index is looked up in Redis once (single-flight) in case it was
created a moment ago, then remembered as unknown for a few seconds; such lookups share
a small per-second budget, so a flood of random keys never turns into a flood of Redis
commands. Any key change clears the negative cache, so a new key works as soon as its
announcement arrives.

A key Redis does not hold is only unknown once the edge Redis holds a complete sync
(the sync state's ``epoch``, which syncd writes when a full sync finished without Redis
losing data). Before that — a new edge, a full sync under way, a Redis that restarted
empty — it may well be valid: the lookup raises :class:`EdgeIncomplete` (the caller
answers "retry", never "unauthorized") and nothing is remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from crivline.keyspace import Keyspace
from crivline.snapshot import EdgeKey
from crivline.tasks import Tasks


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_hash: str  # hex SHA-256
    id: str
    environment: str
    project: str
    tenant: str
    kind: str  # "server" | "client"
    expires_at: float | None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def key_info(key_hash: str, raw: Mapping[Any, Any]) -> KeyInfo | None:
    """A key from its Redis hash fields, or None when the hash is empty or incomplete."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        expires = fields.get("expires_at") or ""
        return KeyInfo(
            key_hash=key_hash,
            id=fields["id"],
            environment=fields["environment"],
            project=fields.get("project", ""),
            tenant=fields.get("tenant", ""),
            kind=fields["kind"],
            expires_at=float(expires) if expires else None,
        )
    except (KeyError, ValueError):
        return None


class EdgeIncomplete(Exception):
    """The key is not in the edge Redis, but neither is a complete sync: ask again soon."""


class _Budget:
    """A token bucket: at most ``rate`` events per second, bursts up to ``rate``."""

    __slots__ = ("_at", "_rate", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = rate
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class KeyIndex:
    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        *,
        negative_ttl: float = 5.0,
        negative_capacity: int = 100_000,
        miss_budget: float = 50.0,
    ) -> None:
        self._redis = redis
        self._ks = keyspace
        self._by_hash: dict[str, KeyInfo] = {}
        self._by_env: dict[str, set[str]] = {}
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._negative_ttl = negative_ttl
        self._negative_capacity = negative_capacity
        self._budget = _Budget(miss_budget)
        self._inflight: dict[str, asyncio.Task[KeyInfo | None]] = {}
        self._tasks = Tasks("keys")
        self._generation = 0  # bumped by every reload; outdated lookups are not cached
        self._edge_complete = True  # what the last lookup found (for lookups over budget)

    def __len__(self) -> int:
        return len(self._by_hash)

    # -- the hot path ---------------------------------------------------------------------

    def cached(self, key_hash: str) -> KeyInfo | bool:
        """The key if known; False if known to be unknown; True if Redis must be asked."""
        info = self._by_hash.get(key_hash)
        if info is not None:
            return info
        until = self._negative.get(key_hash)
        if until is not None:
            if until > time.monotonic():
                return False
            del self._negative[key_hash]
        return True

    async def lookup(self, key_hash: str) -> KeyInfo | None:
        """Ask Redis about a key the index does not hold (single-flight, budgeted).

        None: unknown. Raises :class:`EdgeIncomplete` when the edge Redis has no complete
        sync to tell (and Redis errors as they come)."""
        pending = self._inflight.get(key_hash)
        if pending is None:
            if not self._budget.take():
                # Over budget: refused without asking (and without caching).
                if not self._edge_complete:
                    raise EdgeIncomplete(key_hash)
                return None
            pending = self._tasks.spawn(self._fetch(key_hash), "key-lookup", quiet=True)
            self._inflight[key_hash] = pending
        return await asyncio.shield(pending)

    async def _fetch(self, key_hash: str) -> KeyInfo | None:
        generation = self._generation
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._ks.api_key(key_hash))
                pipe.hexists(self._ks.sync_state, "epoch")
                raw, epoch = await pipe.execute()
            info = key_info(key_hash, raw) if raw else None
            # A record counts only while its environment's key set holds it: the set is
            # written atomically with the environment, the records beside it.
            if info is not None and not await self._redis.sismember(
                self._ks.environment_keys(info.environment), key_hash
            ):
                info = None
        finally:
            del self._inflight[key_hash]
        self._edge_complete = bool(epoch)
        if info is None and not self._edge_complete:
            raise EdgeIncomplete(key_hash)
        if generation != self._generation:
            return info  # keys were reloaded meanwhile: answer, but do not remember it
        if info is None:
            self._remember_unknown(key_hash)
        else:
            self._add(info)
        return info

    def _remember_unknown(self, key_hash: str) -> None:
        self._negative[key_hash] = time.monotonic() + self._negative_ttl
        self._negative.move_to_end(key_hash)
        while len(self._negative) > self._negative_capacity:
            self._negative.popitem(last=False)

    # -- maintenance ----------------------------------------------------------------------

    def _add(self, info: KeyInfo) -> None:
        previous = self._by_hash.get(info.key_hash)
        if previous is not None and previous.environment != info.environment:
            self._by_env.get(previous.environment, set()).discard(info.key_hash)
        self._by_hash[info.key_hash] = info
        self._by_env.setdefault(info.environment, set()).add(info.key_hash)
        self._negative.pop(info.key_hash, None)

    def keys_of(self, env: str) -> list[EdgeKey]:
        """The live keys of ``env`` as this process holds them (for its state file)."""
        out: list[EdgeKey] = []
        for h in self._by_env.get(env, ()):
            info = self._by_hash.get(h)
            if info is not None:
                out.append(EdgeKey(h, info.id, info.kind, info.expires_at))
        return out

    def seed(self, env: str, project: str, tenant: str, keys: Iterable[EdgeKey]) -> None:
        """Keys of an environment served from a file (state folder, bootstrap) before
        Redis has told anything: the next reload of ``env`` from Redis replaces them."""
        for k in keys:
            if k.key_hash not in self._by_hash:
                self._add(KeyInfo(k.key_hash, k.id, env, project, tenant, k.kind, k.expires_at))

    def clear_negative(self) -> None:
        self._negative.clear()

    def forget_environment(self, env: str) -> set[str]:
        """Drop every key of ``env``; returns their hashes."""
        self._generation += 1
        hashes = self._by_env.pop(env, set())
        for h in hashes:
            info = self._by_hash.get(h)
            if info is not None and info.environment == env:
                del self._by_hash[h]
        return hashes

    async def reload_environments(self, envs: Iterable[str]) -> set[str]:
        """Re-read the live keys of ``envs``; returns the hashes that are no longer live."""
        envs = list(envs)
        if not envs:
            return set()
        self._generation += 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for env in envs:
                pipe.smembers(self._ks.environment_keys(env))
            members = await pipe.execute()
        live: dict[str, set[str]] = {
            env: {_text(m) for m in raw} for env, raw in zip(envs, members, strict=True)
        }
        # New keys, and every key of a reloaded environment (an expiry may have changed).
        wanted = [h for env in envs for h in live[env]]
        infos: dict[str, KeyInfo] = {}
        if wanted:
            async with self._redis.pipeline(transaction=False) as pipe:
                for h in wanted:
                    pipe.hgetall(self._ks.api_key(h))
                raws = await pipe.execute()
            for h, raw in zip(wanted, raws, strict=True):
                info = key_info(h, raw) if raw else None
                if info is not None:
                    infos[h] = info
        gone: set[str] = set()
        for env in envs:
            before = self._by_env.get(env, set())
            now_live = {h for h in live[env] if h in infos and infos[h].environment == env}
            for h in before - now_live:
                gone.add(h)
                if (info := self._by_hash.get(h)) is not None and info.environment == env:
                    del self._by_hash[h]
            self._by_env[env] = set()
            for h in now_live:
                self._add(infos[h])
            if not self._by_env[env]:
                del self._by_env[env]
        self.clear_negative()
        return gone

    async def close(self) -> None:
        await self._tasks.close()
