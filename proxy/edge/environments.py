"""The in-process cache of environments: everything a request needs, built once per version.

An :class:`EnvState` is one version of one environment, immutable: the flag-set bytes
as syncd stored them, the compiled evaluator, the ETag, and the SSE events (``put``,
``refetchEvaluation``, the ``patch`` events that led to it) as finished bytes. Requests
read ``cache.get(env)`` — a dict lookup — and never wait for Redis.

:class:`EnvironmentCache` keeps the states current. All work on one environment runs in
one task at a time (single-flight): a thousand requests for a cold environment wait for
one load; a burst of announcements coalesces into as few reads as it takes to reach the
newest version. A refresh reads the environment hash and the newest delta entries through
:meth:`crivline.edge_store.EdgeStore.read_refresh` (one MULTI), builds the new state,
and hands the hub the events for stream clients — the same bytes for every client.

The cache never goes backwards: an older or equal version is ignored, and an
environment that vanished from Redis (a flush) keeps being served until syncd writes it
again or announces its removal.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from crivline import httpserver, sse
from crivline import keyspace as ks
from crivline.edge_store import DeltaEntry, EdgeStore, unbroken_chain
from crivline.errors import ServiceUnavailable
from crivline.flags import CompiledFlagSet, compile_flag_set
from crivline.flags.incremental import recompile_flag_set
from crivline.ioerrors import REDIS_ERRORS
from crivline.keyspace import Keyspace
from crivline.logs import describe, fields
from crivline.tasks import Tasks
from crivline.tracing import DISABLED, Tracing, valid_traceparent
from proxy.edge.keys import KeyIndex
from proxy.edge.status import EdgeStatus
from proxy.hub import Hub, PatchEvent
from proxy.metrics import Metrics
from proxy.options import ProxyOptions

log = logging.getLogger(__name__)

_CONCURRENT_LOADS = 32
_RETRY_COLD_LOAD_SECONDS = 1.0  # a failed cold load is not retried per request
# A refresh that failed (Redis away, a connection that died with a restarted Redis) is
# tried again after this, doubling up to the cap, until the wanted version is loaded.
# The count starts over at each resync (Redis is back): a backoff grown while Redis was
# away must not delay the first reads of the Redis that returned.
_RETRY_REFRESH_SECONDS = 0.05
_RETRY_REFRESH_MAX_SECONDS = 2.0


class Ahead(enum.Enum):
    """What became of a client that proved it holds a version newer than this process."""

    REACHED = "reached"  # this process loaded that version (or a newer one) in time
    OTHER_HISTORY = "other history"  # the edge's complete Redis holds an older version
    NOT_YET = "not yet"  # Redis has it (or cannot say), but it did not load in time


# Versions claimed by clients above what Redis holds, remembered at most this many at once.
_MAX_CLAIMS = 10_000


@dataclass(frozen=True, slots=True, eq=False)
class EnvState:
    id: str
    version: int
    flag_set: bytes  # canonical flagd JSON, exactly as stored
    flags: CompiledFlagSet
    etag: str  # of the flag set: '"<content version>-<content hash>"'
    # The flag set's version (environments.flags_version, through syncd): ``version``
    # itself, or older when the versions since changed only keys or the plan. ETags,
    # stream ids and patch bases name it, so an SDK is told nothing when nothing it
    # holds changed; every edge reads the same number for a version.
    content_version: int
    content_hash: str  # 16 hex characters of BLAKE2b over flag_set
    committed_at: float
    applied_at: float
    loaded_at: float
    flag_set_id: str
    put_event: bytes
    refetch_event: bytes
    bulk_metadata: bytes  # the bulk response's "metadata" object
    time_dependent: bool  # targeting reads the clock: evaluations are not cacheable
    ring: tuple[PatchEvent, ...]  # the recent unbroken chain of patches ending here
    version_text: str
    content_text: str

    def patches_since(self, version: int) -> bytes | None:
        """The patch events from replication version ``version`` to this one, joined;
        None if not in the ring."""
        if version == self.version:
            return b""
        for i, event in enumerate(self.ring):
            if event.base == version:
                return b"".join(e.data for e in self.ring[i:])
        return None

    def patches_since_flags(self, flags_version: int) -> bytes | None:
        """The patch events for a client holding the flag set of ``flags_version`` (a
        stream id), joined; None if not in the ring. The client is at every version
        whose flag set that is: the chain starts at the first event from one of them
        (the events of versions that changed no flag set are empty)."""
        if flags_version == self.content_version:
            return b""  # the client holds this flag set
        for i, event in enumerate(self.ring):
            if event.content_base == flags_version:
                return b"".join(e.data for e in self.ring[i:])
        return None


def content_hash(flag_set: bytes) -> str:
    return hashlib.blake2b(flag_set, digest_size=8).hexdigest()


def flag_set_etag(version: int, digest: str) -> str:
    return f'"{version}-{digest}"'


def version_of_etag(etag: str) -> int | None:
    """The version a flag-set ETag names (``"12-ab…"``, with or without quotes/W/)."""
    text = etag.strip().removeprefix("W/").strip('"')
    return httpserver.decimal(text.split("-", 1)[0])


_FLAG_SET_ETAG = re.compile(r'(?:W/)?"([0-9]{1,18})-[0-9a-f]{16}"')


def newest_etag(if_none_match: str) -> tuple[int, str] | None:
    """The newest flag-set ETag an If-None-Match names, as (version, strong ETag)."""
    best: tuple[int, str] | None = None
    for candidate in if_none_match.split(","):
        match = _FLAG_SET_ETAG.fullmatch(candidate.strip())
        if match is not None:
            version = int(match[1])
            if best is None or version > best[0]:
                best = version, candidate.strip().removeprefix("W/")
    return best


def is_time_dependent(flag_set: bytes) -> bool:
    """Whether targeting may read the clock (``$flagd.timestamp``, or a ``var`` whose
    name is computed, or the whole data object) — then an evaluation cannot be cached."""
    text = flag_set.replace(b'"$flagd.flagKey"', b"")
    return (
        b"$flagd" in text
        or b'"var":""' in text
        or b'"var":[""' in text
        or b'"var":[]' in text
        or b'"var":null' in text
        or b'"var":{' in text
        or b'"var":[{' in text
    )


def patch_event(
    version: int,
    base: int,
    delta: Mapping[str, Any],
    committed_at: float | None = None,
    *,
    content: int | None = None,
    content_base: int | None = None,
) -> PatchEvent:
    """The ``patch`` event of one delta entry (``version``/``base``: its replication
    versions). Its bytes name the flag set's versions: ``content`` (the entry's ``fv``:
    ``id:`` and ``version``) and ``content_base`` (the one the client holds: ``base``);
    each defaults to its replication version. ``committedAt`` (epoch seconds, the commit
    in the central Postgres, from the entry's ``at``) lets a client measure how long the
    change took to reach it; it is left out when the entry has no commit time.

    An entry that leaves the flag set's version where it was (the version moved for
    keys or the plan) has no event: its data is empty, and it stays in the chain only to
    link the versions."""
    shown = version if content is None else content
    shown_base = base if content_base is None else content_base
    if shown <= shown_base:
        return PatchEvent(version, base, b"", shown_base, shown_base)
    head: dict[str, Any] = {"version": shown, "base": shown_base}
    if committed_at:
        head["committedAt"] = committed_at
    data = orjson.dumps({**head, **delta})
    return PatchEvent(version, base, sse.event(data, name="patch", id=shown), shown, shown_base)


def _patches(entries: Sequence[DeltaEntry], content_base: int) -> list[PatchEvent]:
    """The events of a chain of entries starting at a client that holds the flag set of
    ``content_base``; each entry names the flag set's version it brings (``fv``)."""
    events: list[PatchEvent] = []
    for e in entries:
        event = patch_event(
            e.version,
            e.base,
            e.delta,
            e.committed_at,
            content=e.served_version,
            content_base=content_base,
        )
        content_base = event.content
        events.append(event)
    return events


def build_state(
    fields: Mapping[str, bytes],
    ring: tuple[PatchEvent, ...] = (),
    now: float | None = None,
    *,
    previous: EnvState | None = None,
) -> EnvState:
    """One version of an environment from its Redis hash fields (raises on bad data).
    With the ``previous`` version, only the flags that changed are compiled again."""
    flag_set = fields[ks.F_FLAGSET]
    version = int(fields[ks.F_VERSION])
    env = fields[ks.F_ENVIRONMENT].decode()
    doc = orjson.loads(flag_set)
    if previous is not None and previous.id == env:
        # Parsing the previous bytes again costs far less than compiling every flag, and
        # keeps no parsed document alive between versions.
        flags = recompile_flag_set(orjson.loads(previous.flag_set), previous.flags, doc)
    else:
        flags = compile_flag_set(doc)
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    flag_set_id = str(metadata.get("flagSetId", "")) if isinstance(metadata, dict) else ""
    digest = content_hash(flag_set)
    # ETags, stream ids and patch bases name the flag set's version, which syncd read
    # from Postgres with the snapshot (absent: written by an older syncd, the version).
    content = _flags_version(fields.get(ks.F_FLAGS_VERSION), version)
    etag = flag_set_etag(content, digest)
    committed_at = float(fields.get(ks.F_COMMITTED_AT) or 0.0)
    refetch = orjson.dumps(
        {"type": "refetchEvaluation", "etag": etag, "lastModified": int(committed_at)}
    )
    bulk_metadata: dict[str, Any] = {"version": content}
    if flag_set_id:
        bulk_metadata["flagSetId"] = flag_set_id
    return EnvState(
        id=env,
        version=version,
        flag_set=flag_set,
        flags=flags,
        etag=etag,
        content_version=content,
        content_hash=digest,
        committed_at=committed_at,
        applied_at=float(fields.get(ks.F_APPLIED_AT) or 0.0),
        loaded_at=time.time() if now is None else now,
        flag_set_id=flag_set_id,
        put_event=sse.event(flag_set, name="put", id=content),
        refetch_event=sse.event(refetch, name="message", id=content),
        bulk_metadata=orjson.dumps(bulk_metadata),
        time_dependent=is_time_dependent(flag_set),
        ring=ring,
        version_text=str(version),
        content_text=str(content),
    )


def _flags_version(raw: bytes | None, version: int) -> int:
    """The flag set's version of a hash (``version`` when absent or not in 1..version)."""
    try:
        value = int(raw) if raw else version
    except ValueError:
        return version
    return value if 0 < value <= version else version


class EnvironmentCache:
    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        *,
        keys: KeyIndex,
        hub: Hub,
        metrics: Metrics,
        status: EdgeStatus,
        options: ProxyOptions,
        tracing: Tracing = DISABLED,
    ) -> None:
        self._redis = redis
        self._ks = keyspace
        self._tracing = tracing
        self._store = EdgeStore(redis, keyspace)
        self._keys = keys
        self._hub = hub
        self._metrics = metrics
        self._status = status
        self._options = options
        self._states: dict[str, EnvState] = {}
        self._wanted: dict[str, int] = {}  # env -> the version an announcement promised
        # env -> a version announced (or found by a resync) and not loaded yet: /readyz
        # does not say ready while any is left.
        self._announced: dict[str, int] = {}
        self._lag_from: dict[str, float] = {}  # env -> commit time of an announced change
        self._told_at: dict[str, float] = {}  # env -> when an unapplied change was announced
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._failed_at: dict[str, float] = {}  # env -> when loading it last failed
        self._loads = asyncio.Semaphore(_CONCURRENT_LOADS)
        self._retries: dict[str, int] = {}  # env -> failed refreshes in a row
        self._retrying: set[str] = set()  # envs with a retry scheduled
        self._again: set[str] = set()  # envs announced again while their worker read
        # (env, version) a client claimed above Redis's -> when first seen (Redis's clock)
        self._claims: dict[tuple[str, int], float] = {}
        self._tasks = Tasks("environments")
        self.on_keys_gone: Callable[[set[str]], None] = hub.close_keys
        # Told of every version loaded from Redis (with its hash fields), and of every
        # environment that left the edge: the state folder's writer, when there is one.
        self.on_applied: Callable[[str, Mapping[str, bytes]], None] | None = None
        self.on_removed: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, env: object) -> bool:
        return env in self._states

    # -- the hot path -------------------------------------------------------------------

    def get(self, env: str) -> EnvState | None:
        return self._states.get(env)

    def states(self) -> Iterable[EnvState]:
        return self._states.values()

    def held(self, env: str) -> EnvState | None:
        """:meth:`obtain`'s answer without awaiting when this process holds the
        environment (counted as a hit); None: :meth:`obtain` must load it."""
        state = self._states.get(env)
        if state is not None:
            self._metrics.cache_lookup("environment", True)
        return state

    async def obtain(self, env: str) -> EnvState:
        """The environment, loading it first if this process does not hold it yet."""
        state = self.held(env)
        if state is not None:
            return state
        self._metrics.cache_lookup("environment", False)
        failed = self._failed_at.get(env)
        if failed is None or time.monotonic() - failed > _RETRY_COLD_LOAD_SECONDS:
            await asyncio.shield(self._schedule(env, 1))
        state = self._states.get(env)
        if state is None:
            self._failed_at[env] = time.monotonic()  # a flood must not hammer Redis
            if len(self._failed_at) > 10_000:
                self._failed_at.clear()
            why = (
                "Redis is unavailable"
                if not self._status.redis_up
                else "the edge's Redis does not hold it (syncd has not written it yet)"
            )
            raise ServiceUnavailable(
                f"environment {env} is not loaded in this proxy: {why}",
                headers={"Retry-After": "1"},
            )
        return state

    def seed(self, state: EnvState) -> bool:
        """Serve ``state`` (read from a file) unless this process holds it at the same or
        a newer version; Redis's versions replace it as they arrive, never older ones."""
        held = self._states.get(state.id)
        if held is not None and held.version >= state.version:
            return False
        self._install(state)
        return True

    # -- announcements ------------------------------------------------------------------

    def announce(self, env: str, version: int, committed_at: float | None = None) -> None:
        """A change was applied in Redis (from the pub/sub channel): catch up with it."""
        state = self._states.get(env)
        if state is not None and state.version >= version:
            return
        if committed_at is not None:
            self._lag_from[env] = committed_at
        self._expect(env, version)
        self._told_at.setdefault(env, time.time())
        self._schedule(env, version)

    def _expect(self, env: str, version: int) -> None:
        if version > self._announced.get(env, 0):
            self._announced[env] = version
            self._status.set_behind(len(self._announced))

    def _expected(self, env: str, version: int | None = None) -> None:
        """``env`` reached ``version`` (None: nothing is expected of it any more)."""
        announced = self._announced.get(env)
        if announced is not None and (version is None or announced <= version):
            del self._announced[env]
            self._status.set_behind(len(self._announced))

    def removed(self, env: str) -> None:
        """The environment left this edge: forget it, end its streams, drop its keys."""
        self._states.pop(env, None)
        self._wanted.pop(env, None)
        self._retries.pop(env, None)
        self._expected(env)
        self._hub.close_environment(env, "environment removed from this edge")
        if self.on_removed is not None:
            self.on_removed(env)
        gone = self._keys.forget_environment(env)
        if gone:
            self.on_keys_gone(gone)

    async def ensure_version(self, env: str, version: int, wait: float) -> EnvState | None:
        """Wait (bounded) until this process serves ``version`` of ``env`` or newer."""
        state = self._states.get(env)
        if state is not None and state.version >= version:
            return state
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(env, []).append((version, future))
        self._schedule(env, version)
        try:
            await asyncio.wait({future}, timeout=wait)
        finally:
            waiters = self._waiters.get(env)
            if waiters is not None:
                waiters[:] = [(v, f) for v, f in waiters if f is not future]
                if not waiters:
                    del self._waiters[env]
        state = self._states.get(env)
        return state if state is not None and state.version >= version else None

    async def ahead(self, env: str, version: int, wait: float) -> tuple[Ahead, EnvState]:
        """A client proved it holds ``version`` of ``env``, newer than this process serves
        (If-None-Match, Last-Event-ID, a ticket). The refresh starts now (single-flight
        with every other) and is waited for up to ``wait``. Returns what happened and the
        state to answer from (the newest this process holds).

        Ids carry no history, so "behind" and "from another history" (the database was
        recreated, an id typed by hand, another stack) are told apart by syncd's view in
        Redis: this process remembers when, by the Redis server's clock, it first saw a
        client claim a version above Redis's. The version is from another history once
        a reconciliation that *began* after that moment — so after the client held the
        version; it read Postgres later still — found the environment not behind (Redis
        held at least what Postgres had), and Redis, complete and kept fresh, is still
        below it. Then the answer is the current state at once. An edge that is only
        behind (the milliseconds between two edges applying one change, or a syncd slow
        to catch up after a fault) is never taken for it.
        """
        state = await self.obtain(env)
        if state.version >= version:
            return Ahead.REACHED, state
        held = await self._other_history(env, version)
        if held is None:
            newer = await self.ensure_version(env, version, wait)
            if newer is not None:
                self._claims.pop((env, version), None)
                self._metrics.ahead.labels(Ahead.REACHED.value).inc()
                return Ahead.REACHED, newer
            # The wait ran out: a reconciliation may have settled it meanwhile.
            held = await self._other_history(env, version)
            if held is None:
                self._metrics.ahead.labels(Ahead.NOT_YET.value).inc()
                return Ahead.NOT_YET, self._states[env]
        self._claims.pop((env, version), None)
        self._metrics.ahead.labels(Ahead.OTHER_HISTORY.value).inc()
        state = self._states[env]
        if held > state.version:
            state = await self.ensure_version(env, held, wait) or self._states[env]
        return Ahead.OTHER_HISTORY, state

    async def _other_history(self, env: str, version: int) -> int | None:
        """Redis's version of ``env`` when it shows ``version`` is from another history
        (see :meth:`ahead`); None when it does not, or not yet, or cannot tell."""
        if not self._status.syncd_fresh():
            return None  # nobody vouches for Redis: wait for the version
        try:
            held, sync, now = await self._store.claim_view(env)
        except REDIS_ERRORS:
            return None
        key = (env, version)
        if held >= version or sync.epoch is None:
            self._claims.pop(key, None)
            return None
        first_seen = self._claims.get(key)
        if first_seen is None:
            if len(self._claims) >= _MAX_CLAIMS:
                self._claims.clear()  # ids made up in bulk must not grow this for ever
            self._claims[key] = now
            return None
        began = sync.reconciled_started
        if began is None or began <= first_seen or sync.behind_at_reconciliation(env):
            return None
        return held

    # -- resynchronisation ------------------------------------------------------------------

    async def resync(self) -> int:
        """Compare every environment with Redis and catch up (start-up, after a reconnect,
        and periodically as a safety net); returns how many environments and keys it
        changed. Raises if Redis fails meanwhile.

        Absence from Redis only counts once Redis holds a complete sync (an epoch): a
        Redis that restarted empty must not make this process drop what it serves, nor
        the keys it accepts, before syncd has written everything back."""
        self._retries.clear()  # Redis answers: retries start from the shortest delay
        complete = (await self._store.sync_state()).epoch is not None
        served = await self._store.served()
        envs = sorted(served | set(self._states) | set(self._announced))
        versions = await self._store.versions(envs)
        changed = 0
        for env, version in versions.items():
            state = self._states.get(env)
            if complete and version < self._announced.get(env, 0):
                self._expected(env)  # a complete Redis is the truth: that version is gone
            if version == 0:
                if complete and env not in served and state is not None:
                    self.removed(env)  # gone from a complete Redis: it left the edge
                    changed += 1
                continue
            if state is None or state.version < version:
                self._expect(env, version)
                self._schedule(env, version)
                changed += 1
        workers = [w for env in envs if (w := self._workers.get(env)) is not None]
        if workers:
            await asyncio.gather(*(asyncio.shield(w) for w in workers))
        present = [e for e in envs if versions.get(e) and e in self._states]
        gone = await self._keys.reload_environments(present)
        if gone:
            self.on_keys_gone(gone)
        missing = [e for e in served if e not in self._states]
        self._status.loaded(not missing)
        if missing:
            raise RuntimeError(f"{len(missing)} served environments could not be loaded")
        return changed + len(gone)

    # -- the per-environment worker ---------------------------------------------------------

    def _schedule(self, env: str, version: int) -> asyncio.Task[None]:
        if version > self._wanted.get(env, 0):
            self._wanted[env] = version
        worker = self._workers.get(env)
        if worker is None:
            worker = self._tasks.spawn(self._work(env), f"env:{env}", quiet=True)
            self._workers[env] = worker
        else:
            # The running worker may be reading Redis from before this announcement:
            # it must read once more rather than end on an "unchanged".
            self._again.add(env)
        return worker

    async def _work(self, env: str) -> None:
        failed = False
        try:
            async with self._loads:
                while True:
                    state = self._states.get(env)
                    wanted = self._wanted.get(env, 0)
                    if state is not None and state.version >= wanted:
                        break
                    self._again.discard(env)
                    if not await self._refresh(env, state, wanted) and env not in self._again:
                        break
        except Exception as exc:
            failed = True
            self._metrics.refreshes.labels("error").inc()
            log.warning(
                "environment refresh failed",
                extra=fields(environment=env, error=describe(exc)),
            )
        finally:
            del self._workers[env]
            self._again.discard(env)
            state = self._states.get(env)
            # Without a failure the loop only ends when Redis holds nothing newer: a
            # version wanted beyond that (a client's id from another history) is not
            # kept, or every later refresh would read once more looking for it.
            if not failed or (state is not None and self._wanted.get(env, 0) <= state.version):
                self._wanted.pop(env, None)
        if failed:
            self._retry_later(env)
        else:
            self._retries.pop(env, None)

    def _retry_later(self, env: str) -> None:
        """A refresh failed: try again shortly, so a version that was announced (or found
        by a resync) does not wait for the next announcement or the periodic resync."""
        if env in self._retrying or env not in self._wanted:
            return
        attempt = self._retries.get(env, 0)
        self._retries[env] = attempt + 1
        delay = min(_RETRY_REFRESH_MAX_SECONDS, _RETRY_REFRESH_SECONDS * 2**attempt)
        try:
            self._tasks.spawn(self._retry(env, delay), f"retry:{env}", quiet=True)
        except RuntimeError:
            return  # closing
        self._retrying.add(env)

    async def _retry(self, env: str, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._retrying.discard(env)
        wanted = self._wanted.get(env)
        state = self._states.get(env)
        if wanted is not None and (state is None or state.version < wanted):
            self._schedule(env, wanted)

    async def _refresh(self, env: str, state: EnvState | None, wanted: int) -> bool:
        """One read from Redis; True if it moved the environment forward."""
        started = time.time_ns() if self._tracing.enabled else 0
        current = state.version if state is not None else 0
        count = max(2, min(self._options.ring_size, wanted - current + 1))
        read = await self._store.read_refresh(env, deltas=count if state is not None else 0)
        fields = read.fields
        if fields is None:
            self._metrics.refreshes.labels("absent").inc()
            return False
        version = int(fields[ks.F_VERSION])
        if version <= current:
            self._metrics.refreshes.labels("unchanged").inc()
            return False
        patches: list[PatchEvent] | None = None
        if state is not None:
            chain = unbroken_chain(read.deltas, current, version)
            patches = _patches(chain, state.content_version) if chain is not None else None
        ring: tuple[PatchEvent, ...] = ()
        if state is not None and patches is not None:
            ring = (state.ring + tuple(patches))[-self._options.ring_size :]
        build_started = time.perf_counter()
        new = build_state(fields, ring, previous=state)
        self._metrics.stages.labels("build").observe(time.perf_counter() - build_started)
        if state is not None and env not in self._states:
            return False  # removed from the edge while we read: do not resurrect it
        self._install(new)
        if self.on_applied is not None:
            self.on_applied(env, fields)
        if state is not None and new.content_version != state.content_version:
            self._publish(new, patches)
        else:
            # A first load, or versions that changed only keys or the plan: no SDK is
            # told (no patch, no refetch), and there is no change to time. Streams that
            # held the flag set now hold this version (nothing to send them).
            if state is not None:
                self._hub.advance_sdk(new.id, new.content_version, new.version)
            self._told_at.pop(env, None)
            self._lag_from.pop(env, None)
        self._metrics.refreshes.labels("loaded" if state is None else "updated").inc()
        if started:
            self._traced(started, new, current, fields, read.deltas)
        gone = await self._keys.reload_environments([env])
        if gone:
            self.on_keys_gone(gone)
        return True

    def _traced(
        self,
        started: int,
        state: EnvState,
        previous: int,
        fields: Mapping[str, bytes],
        deltas: Sequence[DeltaEntry],
    ) -> None:
        """The span of this apply: a child of syncd's span that wrote the version (its
        trace context is in the hash), linked to those that wrote the versions between."""
        raw = fields.get(ks.F_TRACEPARENT)
        self._tracing.record(
            "proxy apply",
            started,
            parent=valid_traceparent(raw.decode("ascii", "replace") if raw else None),
            links=[d.traceparent for d in deltas if previous < d.version < state.version],
            attributes={
                "crivline.environment": state.id,
                "crivline.version": state.version,
                "crivline.base": previous,
                "crivline.edge": self._ks.edge_id,
            },
        )

    def _install(self, state: EnvState) -> None:
        self._states[state.id] = state
        self._failed_at.pop(state.id, None)
        self._expected(state.id, state.version)
        waiters = self._waiters.get(state.id)
        if waiters:
            for v, future in waiters:
                if v <= state.version and not future.done():
                    future.set_result(None)

    def _publish(self, state: EnvState, patches: list[PatchEvent] | None) -> None:
        first = time.time()
        self._hub.publish_sdk(state.id, state.version, patches, state.put_event)
        self._hub.publish_ofrep(state.id, state.version, state.refetch_event)
        last = time.time()
        stages = self._metrics.stages
        stages.labels("fan_out").observe(last - first)
        told = self._told_at.pop(state.id, None)
        if told is not None:
            stages.labels("told_to_applied").observe(max(0.0, first - told))
            if state.applied_at:
                stages.labels("redis_to_told").observe(max(0.0, told - state.applied_at))
        committed = self._lag_from.pop(state.id, None) or state.committed_at
        if committed:
            self._metrics.propagation_lag.observe(max(0.0, first - committed))
            stages.labels("commit_to_first_write").observe(max(0.0, first - committed))
            stages.labels("commit_to_last_write").observe(max(0.0, last - committed))

    # -- Last-Event-ID ------------------------------------------------------------------

    async def catch_up(self, env: str, since: int) -> tuple[bytes, int]:
        """What a stream client whose last event id is ``since`` (a flag set's version)
        must be sent, and the (replication) version it is then at. Prefers the in-memory
        ring, then Redis's delta log, else a ``put``. The part after the last await is
        synchronous, so the caller can register the client right after without missing
        or repeating an event.

        Ids and versions compare on one axis: the flag set of version ``since`` is the
        one every version from ``since`` up to the next change of the flag set has. So a
        client at ``since`` above this process's version is ahead (it waits), and one at
        or below it holds either this flag set or an older one, never a newer one."""
        state = self._states[env]
        if since >= state.version:
            return b"", since  # current (or ahead of this process: it will wait)
        joined = state.patches_since_flags(since)
        if joined is not None:
            return joined, state.version
        entries = None
        try:
            entries = await self._store.deltas_since(env, since, flags=True)
        except Exception as exc:
            log.info(
                "delta log unavailable for a resume; sending the full flag set",
                extra=fields(environment=env, error=describe(exc)),
            )
        state = self._states.get(env) or state
        if entries:
            events = _patches([e for e in entries if e.version <= state.version], since)
            reached = events[-1].version if events else since
            data = b"".join(e.data for e in events)
            if reached == state.version:
                return data, reached
            tail = state.patches_since(reached)
            if tail is not None:
                return data + tail, state.version
        return state.put_event, state.version

    # -- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        await self._tasks.close()
