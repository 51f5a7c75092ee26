"""The edge Redis as a store: syncd's atomic, version-guarded writes and the reads both sides need.

The layout is :mod:`crivline.keyspace`'s; this module is the only code that writes it.
Every write that changes what an edge serves is one Lua script (``EVALSHA``, loaded
again by the client when a restarted Redis has forgotten it), so a reader never sees an
environment half written:

- :meth:`EdgeStore.apply` — environment hash, delta-log entry, the set of live keys and
  the announcement (PUBLISH on the changes channel; SPUBLISH on the environment's channel
  on a cluster), all only if the new version is greater than the stored one. An older
  version never overwrites a newer one, so several syncd processes may write one edge's
  Redis. The script touches the environment's hash slot only: before it, the
  environment joins the served set and its live keys' records are written; after it, the
  records of keys that left the set are deleted (a record whose hash is not in its
  environment's key set is not honoured, so a crash in between never revives a key).
- :meth:`EdgeStore.remove` — an environment that left the edge (deleted, out of scope).
- :meth:`EdgeStore.begin_full_sync` / :meth:`EdgeStore.finish_full_sync` — the epoch
  is written only when a full sync completed without Redis losing data meanwhile.
- :meth:`EdgeStore.touch_reconciled` / :meth:`EdgeStore.heartbeat`.

The delta of an entry (:mod:`crivline.delta`) is computed here, against the flag set
the caller names as the base (read from Redis just before, or remembered from its own
last write); the entry's ``base`` is the version of that flag set. With ``strict_base``
(syncd) the script writes only if Redis holds exactly that version, so the delta is the
one from what Redis holds. Without it, if another writer got in between, the entry's
``base`` is not the previous entry's ``v`` and stream clients get a full flag set
instead — a race costs a bigger message, never a wrong patch.

The proxy reads with :meth:`EdgeStore.read_refresh` (an environment and its newest
deltas, checked with :func:`unbroken_chain`), :meth:`EdgeStore.deltas_since`,
:meth:`EdgeStore.liveness` and :meth:`EdgeStore.sync_state` (or with plain commands, as
the keyspace docstring documents).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from crivline import keyspace as ks
from crivline import redisconn
from crivline.delta import apply_delta as apply_delta  # re-exported: stream clients use it
from crivline.delta import compute_delta
from crivline.jsontypes import JSON
from crivline.keyspace import Keyspace
from crivline.snapshot import EnvironmentSnapshot
from crivline.tracing import valid_traceparent

# The apply script's arguments before the live keys' hashes, by name (ARGV[1] first). The
# script reads them as locals.
_APPLY_ARGS = (
    "version",
    "base",
    "flagset",
    "delta",
    "committed_at",
    "applied_at",
    "log_length",
    "publish",
    "changes",
    "environment",
    "tenant",
    "project",
    "tenant_key",
    "project_key",
    "environment_key",
    "traceparent",
    "key_count",
    "flags_version",
    "strict",
    "plan_tenant",
    "plan_revision",
    "plan_value",
)

# A tenant's plan into the edge's plans hash (KEYS[$plans]), never over a newer revision.
_PLAN_WRITE = """
local held = redis.call('HGET', KEYS[$plans], plan_tenant)
local newer = false
if held then
  local rev = tonumber(string.match(held, '^(%d+)|'))
  newer = rev ~= nil and rev > tonumber(plan_revision)
end
if not newer then
  redis.call('HSET', KEYS[$plans], plan_tenant, plan_value)
end
"""

_APPLY = Template("""
$arguments
-- The tenant's plan first (a single Redis only: on a cluster the plans hash sits in
-- another slot and is written before this script), whatever becomes of the version.
if plan_tenant ~= '' then
$plan
end
local current = tonumber(redis.call('HGET', KEYS[1], '$F_VERSION') or '0')
if current >= tonumber(version) then
  return {0, current, 0}
end
if strict ~= '' and current ~= tonumber(base) then
  return {2, current, 0}  -- the delta was computed against another version: not written
end
local env = environment
-- Live keys: the set of this environment (the records themselves sit in other slots and
-- are written by the caller: new ones before this script, dropped ones after it).
local n = tonumber(key_count)
local live = {}
local i = $first_key
for _ = 1, n do
  live[ARGV[i]] = true
  i = i + 1
end
local keys_changed = false
local dropped = {}
local old = redis.call('SMEMBERS', KEYS[3])
if #old ~= n then
  keys_changed = true
end
for _, h in ipairs(old) do
  if not live[h] then
    dropped[#dropped + 1] = h
    keys_changed = true
  end
end
redis.call('DEL', KEYS[3])
local batch = {}
i = $first_key
for _ = 1, n do
  batch[#batch + 1] = ARGV[i]
  if #batch == 500 then
    redis.call('SADD', KEYS[3], unpack(batch))
    batch = {}
  end
  i = i + 1
end
if #batch > 0 then
  redis.call('SADD', KEYS[3], unpack(batch))
end
-- The environment, whole.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '$F_VERSION', version, '$F_FLAGSET', flagset,
           '$F_TENANT', tenant, '$F_PROJECT', project, '$F_ENVIRONMENT', env,
           '$F_TENANT_KEY', tenant_key, '$F_PROJECT_KEY', project_key,
           '$F_ENVIRONMENT_KEY', environment_key,
           '$F_COMMITTED_AT', committed_at, '$F_APPLIED_AT', applied_at,
           '$F_FLAGS_VERSION', flags_version)
if traceparent ~= '' then
  redis.call('HSET', KEYS[1], '$F_TRACEPARENT', traceparent)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_length, '*',
             'v', version, 'base', base, 'delta', delta, 'at', committed_at,
             'fv', flags_version, 'tp', traceparent)
else
  redis.call('HDEL', KEYS[1], '$F_TRACEPARENT')  -- no older write's trace for this one
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', log_length, '*',
             'v', version, 'base', base, 'delta', delta, 'at', committed_at,
             'fv', flags_version)
end
local flag = 'false'
local changed = 0
if keys_changed then
  flag = 'true'
  changed = 1
end
redis.call(publish, changes, '{"e":"' .. env .. '","v":' .. version .. ',"at":' ..
           committed_at .. ',"keys":' .. flag .. '}')
local out = {1, current, changed}
for _, h in ipairs(dropped) do
  out[#out + 1] = h
end
return out
""").substitute(
    arguments="\n".join(
        f"local {name} = ARGV[{number}]" for number, name in enumerate(_APPLY_ARGS, start=1)
    ),
    first_key=len(_APPLY_ARGS) + 1,
    plan=Template(_PLAN_WRITE).substitute(plans=4),
    F_VERSION=ks.F_VERSION,
    F_FLAGSET=ks.F_FLAGSET,
    F_TENANT=ks.F_TENANT,
    F_PROJECT=ks.F_PROJECT,
    F_ENVIRONMENT=ks.F_ENVIRONMENT,
    F_TENANT_KEY=ks.F_TENANT_KEY,
    F_PROJECT_KEY=ks.F_PROJECT_KEY,
    F_ENVIRONMENT_KEY=ks.F_ENVIRONMENT_KEY,
    F_COMMITTED_AT=ks.F_COMMITTED_AT,
    F_APPLIED_AT=ks.F_APPLIED_AT,
    F_FLAGS_VERSION=ks.F_FLAGS_VERSION,
    F_TRACEPARENT=ks.F_TRACEPARENT,
)

# The plan alone (a cluster's syncd): KEYS the plans hash; ARGV tenant, revision, value.
_WRITE_PLAN = (
    "local plan_tenant, plan_revision, plan_value = ARGV[1], ARGV[2], ARGV[3]\n"
    + Template(_PLAN_WRITE).substitute(plans=1)
)

_REMOVE = """
local existed = redis.call('EXISTS', KEYS[1])
local out = {0}
for _, h in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  out[#out + 1] = h
end
existed = existed + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if existed > 0 then
  redis.call(ARGV[1], ARGV[2], '{"e":"' .. ARGV[3] .. '","v":0,"removed":true}')
  out[1] = 1
end
return out
"""

_FINISH_FULL_SYNC = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return false
end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
redis.call('HSET', KEYS[1], 'full_sync_at', ARGV[3], 'reconciled_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'reconciled_behind', 'reconciled_started')
-- Markers that crashed syncd processes left behind.
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 8) == 'pending:' and
     tonumber(fields[i + 1]) < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return redis.call('HGET', KEYS[1], 'epoch')
"""

_TOUCH_RECONCILED = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and epoch == ARGV[1] then
  redis.call('HSET', KEYS[1], 'reconciled_at', ARGV[2], 'reconciled_behind', ARGV[3])
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[1], 'reconciled_started', ARGV[4])
  end
  return 1
end
return 0
"""

PENDING_PREFIX = "pending:"
STALE_PENDING_SECONDS = 3600


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _number(value: float) -> str:
    """A float as a JSON number (never ``inf``/``nan``, which JSON has not)."""
    return repr(round(value, 6))


# -- what the store returns --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: bool  # False: Redis already held this version or a newer one (or see below)
    previous: int  # the version Redis held before (0: none)
    keys_changed: bool
    # ``strict_base`` only: not written because Redis held another version than the base.
    base_moved: bool = False


@dataclass(frozen=True, slots=True)
class PlanWrite:
    """A tenant's plan as the edge's plans hash holds it, written before an environment."""

    tenant_id: str
    revision: int  # never written over a newer one
    value: bytes  # ``{revision}|{plan JSON}`` (:func:`crivline.plans.edge_plan_value`)


@dataclass(frozen=True, slots=True)
class StoredEnvironment:
    environment_id: str
    version: int
    flag_set_bytes: bytes
    tenant_id: str
    project_id: str
    tenant_key: str
    project_key: str
    environment_key: str
    committed_at: float
    applied_at: float

    def flag_set(self) -> dict[str, JSON]:
        doc: dict[str, JSON] = orjson.loads(self.flag_set_bytes)
        return doc


@dataclass(frozen=True, slots=True)
class DeltaEntry:
    version: int  # ``v``
    base: int
    delta: dict[str, JSON]
    committed_at: float
    traceparent: str | None = None  # ``tp``: syncd's span that wrote it, when traced
    flags_version: int = 0  # ``fv``: the flag set's version at ``v`` (0: not logged)

    @property
    def served_version(self) -> int:
        """The flag set's version at ``version`` (``version`` itself when not logged)."""
        if 0 < self.flags_version <= self.version:
            return self.flags_version
        return self.version


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_hash: str
    environment_id: str
    project_id: str
    tenant_id: str
    id: str
    kind: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Refresh:
    """What a refresh reads: the hash fields (None: Redis does not hold the environment)
    and the newest delta entries, oldest first."""

    fields: dict[str, bytes] | None
    deltas: list[DeltaEntry]


# More environments behind than this at one reconciliation are recorded as all of them.
MAX_BEHIND_RECORDED = 100
ALL_BEHIND = "*"


@dataclass(frozen=True, slots=True)
class SyncState:
    epoch: str | None
    full_sync_at: float | None
    reconciled_at: float | None
    # The environments the last reconciliation found behind Postgres in Redis (and set to
    # catch up): every other one held at least the central version when it looked.
    reconciled_behind: frozenset[str] = frozenset()
    # When that reconciliation began, by the Redis server's clock (before it read Postgres).
    reconciled_started: float | None = None

    def behind_at_reconciliation(self, env: str) -> bool:
        return env in self.reconciled_behind or ALL_BEHIND in self.reconciled_behind


def _decode_fields(raw: Mapping[Any, Any]) -> dict[str, bytes]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v if isinstance(v, bytes) else str(v).encode()
        )
        for k, v in raw.items()
    }


def _optional_float(raw: bytes | None) -> float | None:
    return float(raw) if raw else None


def _sync_state(raw: Mapping[str, bytes]) -> SyncState:
    epoch = raw.get("epoch")
    return SyncState(
        epoch=epoch.decode() if epoch else None,
        full_sync_at=_optional_float(raw.get("full_sync_at")),
        reconciled_at=_optional_float(raw.get("reconciled_at")),
        reconciled_behind=frozenset(
            e for e in raw.get("reconciled_behind", b"").decode().split(",") if e
        ),
        reconciled_started=_optional_float(raw.get("reconciled_started")),
    )


class EdgeStore:
    """syncd's writes to, and everyone's reads of, one edge Redis.

    ``redis`` may decode responses or not; flag sets are handed back as bytes either way.
    """

    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        *,
        delta_log_length: int = ks.DELTA_LOG_LENGTH,
    ) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.delta_log_length = delta_log_length
        self.cluster = redisconn.is_cluster(redis)
        self._apply = redis.register_script(_APPLY)
        self._write_plan = redis.register_script(_WRITE_PLAN)
        self._remove = redis.register_script(_REMOVE)
        self._finish = redis.register_script(_FINISH_FULL_SYNC)
        self._touch = redis.register_script(_TOUCH_RECONCILED)

    # -- writes ------------------------------------------------------------------------

    async def apply(
        self,
        snapshot: EnvironmentSnapshot,
        *,
        base_version: int,
        base_flag_set: Mapping[str, JSON] | None,
        committed_at: float,
        applied_at: float | None = None,
        traceparent: str | None = None,
        strict_base: bool = False,
        plan: PlanWrite | None = None,
        key_records: bool = True,
    ) -> ApplyResult:
        """Write ``snapshot`` if its version is newer than Redis's, atomically.

        ``base_version``/``base_flag_set`` are what :meth:`read_current` returned just
        before: the delta is computed against that flag set and recorded with that base.
        With ``strict_base`` the write happens only if Redis still holds ``base_version``
        (else ``base_moved``: read the base again), so the delta is exactly the one from
        what Redis holds — and the base may come from the caller's memory of its own last
        write. ``traceparent`` (the writer's span, when tracing is on) is stored with the
        version, in the hash and the delta-log entry. ``plan`` (the tenant's) is written
        first, even when the version is not: never an environment before its plan.
        ``key_records=False`` (with ``strict_base`` only) leaves the served set and the key
        records as they are: the caller wrote them, unchanged, with ``base_version``.

        On a single Redis it is one round trip: the key records and the script (the plan
        inside it) in one pipeline, which one connection runs in order. On a cluster the
        plan and the records sit on other nodes, whose order a pipeline does not keep:
        they go first, then the script.
        """
        if not key_records and not strict_base:
            raise ValueError("key records are only left as they are on a strict base")
        env = snapshot.environment_id
        delta = compute_delta(base_flag_set if base_version > 0 else None, snapshot.flag_set)
        publish, channel = self._publish_to(env)
        # On a single Redis the plan rides in the script (KEYS[4]); a cluster writes it first.
        in_script = plan if plan is not None and not self.cluster else None
        named: dict[str, str | bytes | int] = {
            "version": snapshot.version,
            "base": base_version,
            "flagset": snapshot.flag_set_bytes(),
            "delta": orjson.dumps(delta, option=orjson.OPT_SORT_KEYS),
            "committed_at": _number(committed_at),
            "applied_at": _number(time.time() if applied_at is None else applied_at),
            "log_length": self.delta_log_length,
            "publish": publish,
            "changes": channel,
            "environment": env,
            "tenant": snapshot.tenant_id,
            "project": snapshot.project_id,
            "tenant_key": snapshot.tenant_key,
            "project_key": snapshot.project_key,
            "environment_key": snapshot.environment_key,
            "traceparent": traceparent or "",
            "key_count": len(snapshot.keys),
            "flags_version": snapshot.served_version,
            "strict": "1" if strict_base else "",
            "plan_tenant": in_script.tenant_id if in_script else "",
            "plan_revision": in_script.revision if in_script else 0,
            "plan_value": in_script.value if in_script else "",
        }
        args: list[str | bytes | int] = [named[name] for name in _APPLY_ARGS]
        args += [key.key_hash for key in snapshot.keys]
        keys = [
            self.keyspace.environment(env),
            self.keyspace.deltas(env),
            self.keyspace.environment_keys(env),
        ]
        if in_script is not None:
            keys.append(self.keyspace.plans)
        # Records of an older snapshot than Redis's would revive what it dropped.
        records = key_records and snapshot.version > base_version
        if self.cluster:
            result, joined = await self._apply_on_cluster(snapshot, records, keys, args, plan)
        else:
            result, joined = await self._apply_in_one_trip(snapshot, records, keys, args)
        applied, previous, keys_changed = (int(x) for x in result[:3])
        if applied == 2:
            return ApplyResult(False, previous, False, base_moved=True)
        dropped = [_text(h) or "" for h in result[3:]]
        if dropped:
            await self.redis.delete(*(self.keyspace.api_key(h) for h in dropped))
        if applied and joined and self.cluster:
            # Proxies subscribe to an environment's channel once they know of it: tell
            # them on the edge's channel that this one joined.
            await self.redis.spublish(self.keyspace.edge_changes, self._announcement(snapshot))
        return ApplyResult(bool(applied), previous, bool(keys_changed))

    async def _apply_in_one_trip(
        self,
        snapshot: EnvironmentSnapshot,
        records: bool,
        keys: list[str],
        args: list[str | bytes | int],
    ) -> tuple[list[Any], bool]:
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                if records:
                    self._queue_key_records(pipe, snapshot)
                pipe.evalsha(self._apply.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            if not isinstance(results[-1], NoScriptError):
                break
            # A Redis that restarted has forgotten the script: load it and send it all
            # again (the records are written whole each time; the script did nothing).
            await self.redis.script_load(self._apply.script)
        for outcome in results:
            if isinstance(outcome, Exception):
                raise outcome
        return results[-1], records and bool(results[0])

    async def _apply_on_cluster(
        self,
        snapshot: EnvironmentSnapshot,
        records: bool,
        keys: list[str],
        args: list[str | bytes | int],
        plan: PlanWrite | None,
    ) -> tuple[list[Any], bool]:
        if plan is not None:
            await self._write_plan(
                keys=[self.keyspace.plans], args=[plan.tenant_id, plan.revision, plan.value]
            )
        joined = False
        if records:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._queue_key_records(pipe, snapshot)
                joined = bool((await pipe.execute())[0])
        return await self._apply(keys=keys, args=args), joined

    def _publish_to(self, env: str) -> tuple[str, str]:
        """The command and channel an environment's announcements go out on."""
        if self.cluster:
            return "SPUBLISH", self.keyspace.environment_changes(env)
        return "PUBLISH", self.keyspace.changes

    @staticmethod
    def _announcement(snapshot: EnvironmentSnapshot) -> bytes:
        return orjson.dumps({"e": snapshot.environment_id, "v": snapshot.version, "keys": True})

    def _queue_key_records(self, pipe: Pipeline, snapshot: EnvironmentSnapshot) -> None:
        """Before the apply script: the environment joins the served set (the first
        reply: whether it was new there) and every live key's record is written whole
        (records live in their own hash slots; a record is only honoured while its hash
        is in its environment's key set, which the script writes)."""
        env = snapshot.environment_id
        pipe.sadd(self.keyspace.served, env)
        for key in snapshot.keys:
            name = self.keyspace.api_key(key.key_hash)
            expires = "" if key.expires_at is None else _number(key.expires_at)
            # One HSET of every field, never DEL then HSET: a proxy reading between
            # the two would take a live key for unknown (401).
            pipe.hset(
                name,
                mapping={
                    "environment": env,
                    "project": snapshot.project_id,
                    "tenant": snapshot.tenant_id,
                    "id": key.id,
                    "kind": key.kind,
                    "expires_at": expires,
                },
            )
            if key.expires_at is not None:
                pipe.pexpireat(name, int(key.expires_at * 1000))
            else:
                pipe.persist(name)  # an expiry lifted since the last write

    async def remove(self, environment_id: str) -> bool:
        """Forget an environment (its flag set, deltas and keys); announce it if it was here."""
        env = environment_id
        command, channel = self._publish_to(env)
        result = await self._remove(
            keys=[
                self.keyspace.environment(env),
                self.keyspace.deltas(env),
                self.keyspace.environment_keys(env),
            ],
            args=[command, channel, env],
        )
        hashes = [_text(h) or "" for h in result[1:]]
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in hashes:
                pipe.delete(self.keyspace.api_key(h))
            pipe.srem(self.keyspace.served, env)
            *_, left = await pipe.execute()
        return bool(int(result[0]) or left)

    async def begin_full_sync(self, now: float | None = None) -> str:
        """Mark a full sync as under way; returns the marker for :meth:`finish_full_sync`."""
        marker = PENDING_PREFIX + secrets.token_hex(8)
        await self.redis.hset(
            self.keyspace.sync_state, marker, _number(time.time() if now is None else now)
        )
        return marker

    async def finish_full_sync(self, marker: str, now: float | None = None) -> str | None:
        """Write the epoch (a new one if Redis has none) and the full-sync time.

        Returns the epoch, or None when the marker is gone — Redis lost data while the
        sync ran, so the sync is not complete and must run again.
        """
        epoch = await self._finish(
            keys=[self.keyspace.sync_state],
            args=[
                marker,
                secrets.token_hex(16),
                _number(time.time() if now is None else now),
                STALE_PENDING_SECONDS,
            ],
        )
        return _text(epoch)

    async def touch_reconciled(
        self,
        epoch: str,
        now: float | None = None,
        *,
        behind: Iterable[str] = (),
        started: float | None = None,
    ) -> bool:
        """Record a finished reconciliation, only if Redis still holds ``epoch``, with the
        environments it found behind and when it began (:meth:`clock`, read before it
        read Postgres): proxies tell a lagging edge from another history by them."""
        found = sorted(behind)
        recorded = ALL_BEHIND if len(found) > MAX_BEHIND_RECORDED else ",".join(found)
        done = await self._touch(
            keys=[self.keyspace.sync_state],
            args=[
                epoch,
                _number(time.time() if now is None else now),
                recorded,
                "" if started is None else _number(started),
            ],
        )
        return bool(done)

    async def heartbeat(self, ttl: float, info: Mapping[str, JSON]) -> None:
        await self.redis.set(
            self.keyspace.heartbeat, orjson.dumps(info), px=max(1, int(ttl * 1000))
        )

    # -- reads -------------------------------------------------------------------------

    async def version(self, environment_id: str) -> int:
        """The version Redis holds for an environment (0: none)."""
        raw = await self.redis.hget(self.keyspace.environment(environment_id), ks.F_VERSION)
        return int(raw) if raw is not None else 0

    async def read_current(self, environment_id: str) -> tuple[int, dict[str, JSON] | None]:
        """The version Redis holds for an environment (0: none) and its flag set."""
        version, flag_set = await self.redis.hmget(
            self.keyspace.environment(environment_id), [ks.F_VERSION, ks.F_FLAGSET]
        )
        if version is None:
            return 0, None
        doc = orjson.loads(flag_set) if flag_set is not None else None
        return int(version), doc

    async def versions(self, environment_ids: Sequence[str]) -> dict[str, int]:
        """The version Redis holds for each environment (0: none), in one round trip."""
        if not environment_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for env in environment_ids:
                pipe.hget(self.keyspace.environment(env), ks.F_VERSION)
            raw = await pipe.execute()
        return {
            env: int(v) if v is not None else 0 for env, v in zip(environment_ids, raw, strict=True)
        }

    async def served(self) -> set[str]:
        members: Iterable[bytes | str] = await self.redis.smembers(self.keyspace.served)
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def clock(self) -> float:
        """The Redis server's time (seconds): one clock for syncd and every proxy."""
        seconds, micros = await self.redis.time()
        return int(seconds) + int(micros) / 1_000_000

    async def claim_view(self, environment_id: str) -> tuple[int, SyncState, float]:
        """An environment's version (0: none), the sync state and the Redis server's
        time, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keyspace.environment(environment_id), ks.F_VERSION)
            pipe.hgetall(self.keyspace.sync_state)
            pipe.time()
            version, raw, (seconds, micros) = await pipe.execute()
        now = int(seconds) + int(micros) / 1_000_000
        held = int(version) if version is not None else 0
        return held, _sync_state(_decode_fields(raw or {})), now

    async def sync_state(self) -> SyncState:
        return _sync_state(_decode_fields(await self.redis.hgetall(self.keyspace.sync_state)))

    async def read_environment(self, environment_id: str) -> StoredEnvironment | None:
        raw = _decode_fields(await self.redis.hgetall(self.keyspace.environment(environment_id)))
        if ks.F_VERSION not in raw:
            return None
        return StoredEnvironment(
            environment_id=raw[ks.F_ENVIRONMENT].decode(),
            version=int(raw[ks.F_VERSION]),
            flag_set_bytes=raw[ks.F_FLAGSET],
            tenant_id=raw[ks.F_TENANT].decode(),
            project_id=raw[ks.F_PROJECT].decode(),
            tenant_key=raw[ks.F_TENANT_KEY].decode(),
            project_key=raw[ks.F_PROJECT_KEY].decode(),
            environment_key=raw[ks.F_ENVIRONMENT_KEY].decode(),
            committed_at=float(raw[ks.F_COMMITTED_AT]),
            applied_at=float(raw[ks.F_APPLIED_AT]),
        )

    async def read_refresh(self, environment_id: str, *, deltas: int) -> Refresh:
        """An environment's hash fields and its newest ``deltas`` log entries, in one MULTI
        (syncd writes both in one script, so they match). The proxy builds its state from
        the fields as they are, so a field it does not know costs nothing."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keyspace.environment(environment_id))
            if deltas > 0:
                pipe.xrevrange(self.keyspace.deltas(environment_id), count=deltas)
            results = await pipe.execute()
        fields = _decode_fields(results[0] or {})
        if ks.F_VERSION not in fields:
            return Refresh(None, [])
        newest_first = results[1] if deltas > 0 else []
        entries = [_entry(f) for _id, f in reversed(newest_first or []) if f is not None]
        return Refresh(fields, entries)

    async def liveness(self) -> tuple[bool, SyncState]:
        """Whether syncd's heartbeat is there, and the sync state, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self.keyspace.heartbeat)
            pipe.hgetall(self.keyspace.sync_state)
            alive, raw = await pipe.execute()
        return bool(alive), _sync_state(_decode_fields(raw or {}))

    async def read_api_key(self, key_hash: str) -> StoredKey | None:
        raw = _decode_fields(await self.redis.hgetall(self.keyspace.api_key(key_hash)))
        if "environment" not in raw:
            return None
        return StoredKey(
            key_hash=key_hash,
            environment_id=raw["environment"].decode(),
            project_id=raw["project"].decode(),
            tenant_id=raw["tenant"].decode(),
            id=raw["id"].decode(),
            kind=raw["kind"].decode(),
            expires_at=_optional_float(raw.get("expires_at")),
        )

    async def environment_key_hashes(self, environment_id: str) -> set[str]:
        members: Iterable[bytes | str] = await self.redis.smembers(
            self.keyspace.environment_keys(environment_id)
        )
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    async def delta_log(self, environment_id: str) -> list[DeltaEntry]:
        """The whole delta log, oldest first."""
        entries = await self.redis.xrange(self.keyspace.deltas(environment_id)) or []
        return [_entry(fields) for _id, fields in entries if fields is not None]

    async def deltas_since(
        self, environment_id: str, version: int, *, page: int = 64, flags: bool = False
    ) -> list[DeltaEntry] | None:
        """The entries that take a client from ``version`` to the newest logged version.

        ``[]`` when the client is already there; None when the log cannot prove an
        unbroken chain from ``version`` (too old, trimmed, or a writer race) — send the
        full flag set then. The caller compares the last entry's version with the one it
        serves.

        ``flags``: ``version`` is a flag set's version (what SDKs hold: a stream id),
        not a replication version. The client then holds the flag set of every logged
        version whose ``fv`` is ``version``, and the chain starts after the newest of them
        (or at an entry whose ``base`` is ``version``).
        """
        name = self.keyspace.deltas(environment_id)
        newer: list[DeltaEntry] = []
        upper: str = "+"
        while True:
            batch = await self.redis.xrevrange(name, max=upper, min="-", count=page)
            if not batch:
                break
            for _entry_id, fields in batch:
                if fields is None:  # an entry deleted while we read
                    continue
                entry = _entry(fields)
                if flags and entry.served_version <= version:
                    if entry.served_version != version:
                        return None  # this edge never held that flag set alone
                    return unbroken_chain(newer[::-1], entry.version)
                if not flags and entry.version <= version:
                    return unbroken_chain(newer[::-1], version)
                newer.append(entry)
            last_id = _text(batch[-1][0])
            assert last_id is not None
            upper = "(" + last_id
        # Every logged entry is newer than ``version``: the oldest must start from it.
        return unbroken_chain(newer[::-1], version) if newer else None


def _entry(fields: Mapping[Any, Any]) -> DeltaEntry:
    raw = _decode_fields(fields)
    delta = orjson.loads(raw["delta"]) if raw.get("delta") else {}
    return DeltaEntry(
        version=int(raw["v"]),
        base=int(raw["base"]),
        delta=delta if isinstance(delta, dict) else {},
        committed_at=_commit_time(raw.get("at")),
        traceparent=valid_traceparent(_text(raw.get("tp"))),
        flags_version=_whole(raw.get("fv")),
    )


def _whole(raw: bytes | None) -> int:
    """A positive whole number, or 0 when absent or not one."""
    try:
        value = int(raw) if raw else 0
    except ValueError:
        return 0
    return max(value, 0)


def _commit_time(raw: bytes | None) -> float:
    """An entry's commit time; 0.0 when it has none (or one that is not a time)."""
    try:
        at = float(raw) if raw else 0.0
    except ValueError:
        return 0.0
    return at if at > 0 else 0.0


def unbroken_chain(
    entries: Sequence[DeltaEntry], since: int, until: int | None = None
) -> list[DeltaEntry] | None:
    """The entries (oldest first) that take a reader from ``since`` to ``until`` (or to
    the newest one), or None when they do not link up: each entry's ``base`` must be the
    version before it, else a writer raced and a patch would be wrong."""
    chain = [e for e in entries if e.version > since and (until is None or e.version <= until)]
    expected = since
    for entry in chain:
        if entry.base != expected:
            return None
        expected = entry.version
    if until is not None and expected != until:
        return None
    return chain
