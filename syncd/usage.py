"""Usage from the edge Redis to control, exactly once (DESIGN §9).

Every ``CRIVLINE_USAGE_FLUSH_INTERVAL`` seconds:

1. **Stage** (one Lua script, atomic): if a batch is already staged, keep it — it was
   sent, or was about to be, by a syncd that then died, and must be sent again as it
   is. Otherwise rename the counts hash to the batch hash and give it the next
   sequence. Counts the proxies add meanwhile go to a fresh counts hash.
2. **Send** the batch to control's ``POST /edge/v1/usage`` with this edge's credential.
   Control adds (edge, sequence) once; a resend is acknowledged as a duplicate.
3. **Drop** the batch only after control's acknowledgement, and only if it is still that
   sequence; write the tenants' totals of today from the answer for the proxies.

So a SIGKILL anywhere resends (never loses) the staged batch, a resend never counts
twice, and while control or its Postgres is down the batch waits in Redis while new
counts keep accumulating beside it. A Redis that restarts *empty* loses what it held
(at most about two intervals of counts); with Redis persistence on, nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import aiohttp
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from crivline.keyspace import F_TENANT, Keyspace
from crivline.logs import describe, fields
from crivline.plans import EVALUATION_KINDS
from crivline.usage import Batch, counts_from_fields, pending_field

log = logging.getLogger(__name__)

SEQUENCE_FIELD = "_seq"

# KEYS: counts, batch, sequence. ARGV: now in ms.
# Returns the batch hash as a flat list (empty when there is nothing to send).
_STAGE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
    if redis.call('EXISTS', KEYS[1]) == 0 then
        return {}
    end
    local last = tonumber(redis.call('GET', KEYS[3]) or '0')
    local seq = math.max(last + 1, tonumber(ARGV[1]))
    redis.call('RENAME', KEYS[1], KEYS[2])
    redis.call('HSET', KEYS[2], '_seq', string.format('%d', seq))
    redis.call('SET', KEYS[3], string.format('%d', seq))
end
return redis.call('HGETALL', KEYS[2])
"""

# KEYS: batch, pending, today. ARGV: the acknowledged sequence (or ""), the number of
# pending decrements, the decrements as (field, n) pairs, then the totals as (field,
# value) pairs. One script: the proxies never see a batch's evaluations both in control's
# total and still pending, nor in neither.
_ACKNOWLEDGE = """
local n = tonumber(ARGV[2])
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], '_seq') == ARGV[1] then
    redis.call('DEL', KEYS[1])
    for i = 0, n - 1 do
        local name = ARGV[3 + 2 * i]
        if redis.call('HINCRBY', KEYS[2], name, -tonumber(ARGV[4 + 2 * i])) <= 0 then
            redis.call('HDEL', KEYS[2], name)
        end
    end
end
local first = 3 + 2 * n
if #ARGV >= first then
    redis.call('DEL', KEYS[3])
    for i = first, #ARGV, 2 do
        redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    end
end
return 1
"""


# KEYS: pending. ARGV: the oldest day to keep (ISO; ISO dates sort as text). Pending
# counts of older days are stale — the quota reads only today's, and a batch of those
# days that control took in would have removed them — so they are dropped.
_DROP_STALE = """
local dropped = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    local day = string.match(name, '|([^|]+)$')
    if day and day < ARGV[1] then
        redis.call('HDEL', KEYS[1], name)
        dropped = dropped + 1
    end
end
return dropped
"""


class DeliveryFailed(Exception):
    """Control did not acknowledge the batch; it stays staged and is sent again."""


@dataclass(frozen=True, slots=True)
class Flushed:
    sequence: int
    counted: int  # the sum of the batch's counts
    duplicate: bool


class UsageFlusher:
    def __init__(
        self,
        redis: Redis,
        keyspace: Keyspace,
        *,
        control_url: str,
        credential: str,
        timeout: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keyspace = keyspace
        self.url = f"{control_url}/edge/v1/usage"
        self.credential = credential
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._stage = redis.register_script(_STAGE)
        self._acknowledge = redis.register_script(_ACKNOWLEDGE)
        self._drop_stale = redis.register_script(_DROP_STALE)

    async def served_tenants(self) -> tuple[str, ...]:
        """The tenants of the environments this edge serves (whose totals it needs)."""
        members: Iterable[bytes | str] = await self.redis.smembers(self.keyspace.served)
        envs = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        if not envs:
            return ()
        async with self.redis.pipeline(transaction=False) as pipe:
            for env in envs:
                pipe.hget(self.keyspace.environment(env), F_TENANT)
            found = await pipe.execute()
        return tuple(sorted({t.decode() for t in found if t}))

    async def staged(self) -> Batch | None:
        """The batch to deliver (staging the current counts if none is pending)."""
        keys = [self.keyspace.usage, self.keyspace.usage_batch, self.keyspace.usage_sequence]
        flat = await self._stage(keys=keys, args=[int(time.time() * 1000)])
        if not flat:
            return None
        raw = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(v)
            for k, v in zip(flat[::2], flat[1::2], strict=True)
        }
        sequence = raw.pop(SEQUENCE_FIELD)
        return Batch(sequence, counts_from_fields(raw), ())

    async def flush(self, session: aiohttp.ClientSession) -> Flushed | None:
        """Deliver the pending batch (or stage and deliver one). None: nothing to send."""
        batch = await self.staged()
        tenants = await self.served_tenants()
        if batch is None:
            if not tenants:
                return None
            # Nothing counted here: still ask for today's totals (other edges count).
            await self._totals(session, Batch(0, (), tenants), probe=True)
            return None
        batch = Batch(batch.sequence, batch.counts, tenants)
        answer = await self._post(session, batch.to_json())
        await self._acknowledged(str(batch.sequence), await self._pending_share(batch), answer)
        counted = sum(c.count for c in batch.counts)
        return Flushed(batch.sequence, counted, bool(answer.get("duplicate")))

    async def _totals(self, session: aiohttp.ClientSession, batch: Batch, probe: bool) -> None:
        # Sequence numbers start at 1: a probe reuses this edge's last one, which control
        # already has, so it adds nothing and only reads the totals.
        last = await self.redis.get(self.keyspace.usage_sequence)
        if last is None:
            return
        answer = await self._post(session, {"sequence": int(last), "tenants": list(batch.tenants)})
        await self._acknowledged("", {}, answer)

    async def _post(self, session: aiohttp.ClientSession, body: object) -> dict[str, object]:
        try:
            async with session.post(
                self.url,
                data=orjson.dumps(body),
                headers={
                    "Authorization": f"Bearer {self.credential}",
                    "Content-Type": "application/json",
                },
                timeout=self.timeout,
            ) as response:
                text = await response.read()
                if response.status != 200:
                    raise DeliveryFailed(f"control answered {response.status}: {text[:200]!r}")
                answer = orjson.loads(text)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise DeliveryFailed(describe(exc)) from None
        if not isinstance(answer, dict):
            raise DeliveryFailed("control's answer is not a JSON object")
        return answer

    async def _pending_share(self, batch: Batch) -> dict[str, int]:
        """The batch's evaluations per pending field (tenant and day), which leave the
        edge's pending counts when control has them."""
        envs = sorted({c.environment_id for c in batch.counts if c.kind in EVALUATION_KINDS})
        if not envs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for env in envs:
                pipe.hget(self.keyspace.environment(env), F_TENANT)
            found = await pipe.execute()
        tenant_of = {e: t.decode() for e, t in zip(envs, found, strict=True) if t}
        share: dict[str, int] = {}
        for c in batch.counts:
            tenant = tenant_of.get(c.environment_id)
            if c.kind in EVALUATION_KINDS and tenant:
                name = pending_field(tenant, c.day)
                share[name] = share.get(name, 0) + c.count
        return share

    async def _acknowledged(
        self, sequence: str, share: dict[str, int], answer: dict[str, object]
    ) -> None:
        """Drop the acknowledged batch, take its share out of pending, write the totals."""
        args: list[str | int] = [sequence, len(share)]
        for name, n in sorted(share.items()):
            args += [name, n]
        totals, day = answer.get("evaluationsToday"), answer.get("day")
        if isinstance(totals, dict) and isinstance(day, str):
            args += ["day", day]
            for tenant, total in totals.items():
                if type(total) is int:
                    args += [str(tenant), total]
        keys = [self.keyspace.usage_batch, self.keyspace.usage_pending, self.keyspace.usage_today]
        await self._acknowledge(keys=keys, args=args)
        if isinstance(day, str):
            await self.drop_stale_pending(day)

    async def drop_stale_pending(self, today: str) -> int:
        """Drop the pending counts of days before yesterday (control's ``today``, ISO);
        returns how many fields went."""
        try:
            oldest = (date.fromisoformat(today) - timedelta(days=1)).isoformat()
        except ValueError:
            return 0
        dropped = await self._drop_stale(keys=[self.keyspace.usage_pending], args=[oldest])
        return int(dropped)

    async def run(self, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled; failures are retried."""
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    flushed = await self.flush(session)
                    if flushed is not None:
                        log.debug(
                            "usage flushed",
                            extra=fields(sequence=flushed.sequence, counted=flushed.counted),
                        )
                except (DeliveryFailed, RedisError, OSError) as exc:
                    log.warning("usage flush failed; will retry", extra=fields(error=str(exc)))
                await asyncio.sleep(interval)
