"""Fan-out to stream clients: the same pre-built bytes to everyone, bounded per client.

Every open stream is a :class:`StreamClient` registered here under its environment and
its key. Publishing writes each event straight to every client's socket: one bytes
object per event (framed once as an HTTP/1.1 chunk, the framing aiohttp gives the
response) shared by all clients, one ``transport.write`` per client, no task woken per
client. Publishing never waits: a client whose socket holds more than
``stream_buffer_bytes`` unsent (it stopped reading, or reads slower than changes
arrive) is disconnected — its transport aborted — so it can neither slow the others
down nor grow this process's memory; its next connection resumes with
``Last-Event-ID``. Keep-alives and farewells go the same way.

Each client knows the version it has been sent. ``publish_sdk`` sends a client only
what takes it from there (the patches after its version, or a ``put`` when it is not on
the chain); a client that is already at or past the new version gets nothing — no
duplicate, no version out of order, even for a client that resumed from a version this
process had not reached yet.

The hub also enforces the stream limits (per key and per process), sends keep-alive
comments, closes the streams of revoked or expired keys, and on shutdown tells every
client to reconnect elsewhere.

With a maximum stream lifetime (``CRIVLINE_MAX_STREAM_SECONDS``) a stream that reached
it is ended the way shutdown ends streams — a farewell written through the same path —
with a ``retry:`` drawn uniformly across the reconnect window
(``CRIVLINE_STREAM_RECONNECT_WINDOW``), so the clients of a process that opened many
streams at once come back spread over the window (through the load balancer, to any
process) instead of all at once; each resumes with ``Last-Event-ID`` and misses nothing.
Streams open in time order and share one lifetime, so the sweep looks only at the
oldest ones.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from crivline import sse
from crivline.errors import ServiceUnavailable, TooManyRequests
from crivline.tasks import Tasks
from proxy.metrics import Metrics
from proxy.options import ProxyOptions

SDK = "sdk"
OFREP = "ofrep"

KEEPALIVE = sse.comment("keep-alive")


@dataclass(frozen=True, slots=True)
class PatchEvent:
    """One ``patch`` event, finished bytes, taking a client from ``base`` to ``version``
    (replication versions: how the chain links). ``content_base``/``content`` are the flag
    set's versions before and after it, which its bytes name (``base``, ``id:``); equal
    when the version changed only keys or the plan — then ``data`` is empty."""

    version: int
    base: int
    data: bytes
    content: int = 0
    content_base: int = 0


class Transport(Protocol):
    """What the hub needs of a client's socket (an asyncio write transport)."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (RFC 9112 §7.1), as aiohttp would frame it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


KEEPALIVE_CHUNK = chunk(KEEPALIVE)


class StreamClient:
    """One open stream. Until its handler attaches the socket, what is sent queues here
    (the opening bytes, anything published meanwhile); from then on the hub writes
    straight to the socket — no task wakes per client per event, and every client is
    handed the same bytes object. The bound is the socket's own unsent buffer: over
    ``limit`` the client is cut off (it resumes with ``Last-Event-ID``)."""

    __slots__ = (
        "_chunked",
        "_done",
        "_limit",
        "_pending",
        "_size",
        "_transport",
        "alive",
        "close_reason",
        "closed",
        "ends_at",
        "env",
        "expires_at",
        "key_hash",
        "kind",
        "version",
    )

    def __init__(
        self,
        env: str,
        key_hash: str,
        kind: str,
        version: int,
        *,
        limit: int,
        expires_at: float | None,
    ) -> None:
        self.env = env
        self.key_hash = key_hash
        self.kind = kind
        self.version = version
        self.expires_at = expires_at
        self.ends_at: float | None = None  # monotonic: the end of its maximum lifetime
        self.closed = False
        self.close_reason: str | None = None
        self.alive: Callable[[], bool] | None = None  # set by the handler: is the peer there
        self._pending: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._transport: Transport | None = None
        self._chunked = False
        self._done: asyncio.Future[None] | None = None

    def send(self, data: bytes, framed: bytes | None = None) -> bool:
        """Send ``data`` (``framed``: the same as one HTTP chunk, when the caller has it
        for many clients); False, and the client is cut off, if it would overflow."""
        if self.closed:
            return False
        transport = self._transport
        if transport is None:
            if self._size + len(data) > self._limit and self._pending:
                self._overflow()
                return False
            self._pending.append(data)
            self._size += len(data)
            return True
        if transport.is_closing():
            self.close("client disconnected")
            return False
        out = data if not self._chunked else framed if framed is not None else chunk(data)
        unsent = transport.get_write_buffer_size()
        if unsent and unsent + len(out) > self._limit:
            self._overflow()
            return False
        transport.write(out)
        return True

    def _overflow(self) -> None:
        self._pending.clear()
        self._size = 0
        self.close("overflow")
        if self._transport is not None:
            self._transport.abort()

    def take(self) -> bytes:
        """What queued before the socket was attached (the handler writes it)."""
        pending = self._pending
        self._pending = []
        self._size = 0
        return pending[0] if len(pending) == 1 else b"".join(pending)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def attach(self, transport: Transport, *, chunked: bool) -> None:
        """From now on the hub writes to ``transport`` itself. Call with nothing queued
        (after :meth:`take`, with no await between), so nothing is reordered."""
        if self._pending:
            raise RuntimeError("attach() with bytes still queued")
        self._transport = transport
        self._chunked = chunked
        self.alive = lambda: not transport.is_closing()

    def close(self, reason: str, final: bytes = b"") -> None:
        if self.closed:
            return
        if final:
            self.send(final)
            if self.closed:  # the farewell found the client gone or over its bound
                if self._done is not None and not self._done.done():
                    self._done.set_result(None)
                return
        self.closed = True
        self.close_reason = reason
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        if self.closed:
            return
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        await self._done


class Hub:
    def __init__(
        self,
        metrics: Metrics,
        options: ProxyOptions,
        *,
        max_streams: int,
        max_streams_per_key: int,
        max_lifetime: float = 0.0,
        reconnect_window: float = 30.0,
        crowded: Callable[[], bool] = lambda: False,
        elsewhere: Callable[[str], int] = lambda _key_hash: 0,
    ) -> None:
        self._metrics = metrics
        self._lifetime = max_lifetime  # seconds; 0: streams live until something ends them
        self._window_ms = max(0, round(reconnect_window * 1000))
        self._by_age: deque[StreamClient] = deque()  # lifetime on: in the order they opened
        self._crowded = crowded
        self._elsewhere = elsewhere  # a key's streams at the edge's other processes
        self._options = options
        self._max = max_streams
        self._max_per_key = max_streams_per_key
        self._by_env: dict[tuple[str, str], set[StreamClient]] = {}
        self._by_key: dict[str, set[StreamClient]] = {}
        self._expiring: set[StreamClient] = set()
        self._count = 0
        self._tasks = Tasks("hub")
        self._gauges = {k: metrics.streams_open.labels(k) for k in (SDK, OFREP)}
        self.closing = False

    def __len__(self) -> int:
        return self._count

    # -- clients ------------------------------------------------------------------------

    def open(
        self, env: str, key_hash: str, kind: str, version: int, expires_at: float | None
    ) -> StreamClient:
        """Register a stream, or refuse it with the limit it would break."""
        if self.closing:
            raise ServiceUnavailable(
                "this proxy is shutting down; connect again", headers={"Retry-After": "1"}
            )
        if self._count >= self._max:
            self._metrics.rate_limited.labels("streams_per_process").inc()
            raise ServiceUnavailable(
                f"this proxy holds its maximum of {self._max} open streams "
                "(CRIVLINE_MAX_STREAMS); connect to another one or retry later",
                headers={"Retry-After": "5"},
            )
        if self._crowded():
            self._metrics.rate_limited.labels("connections_per_process").inc()
            raise ServiceUnavailable(
                "this proxy is near its maximum of open connections "
                "(CRIVLINE_MAX_CONNECTIONS); connect to another one or retry later",
                headers={"Retry-After": "5"},
            )
        mine = self._by_key.get(key_hash)
        held = (len(mine) if mine is not None else 0) + self._elsewhere(key_hash)
        if held >= self._max_per_key:
            self._metrics.rate_limited.labels("streams_per_key").inc()
            raise TooManyRequests(
                f"this key already has {held} open streams on this edge, its maximum "
                "(CRIVLINE_MAX_STREAMS_PER_KEY); close one first",
                headers={"Retry-After": "5"},
            )
        client = StreamClient(
            env,
            key_hash,
            kind,
            version,
            limit=self._options.stream_buffer_bytes,
            expires_at=expires_at,
        )
        self._by_env.setdefault((env, kind), set()).add(client)
        self._by_key.setdefault(key_hash, set()).add(client)
        if expires_at is not None:
            self._expiring.add(client)
        if self._lifetime > 0:
            client.ends_at = time.monotonic() + self._lifetime
            self._by_age.append(client)
        self._count += 1
        self._gauges[kind].inc()
        return client

    def release(self, client: StreamClient) -> None:
        """The handler of ``client`` ended (always called, whatever the reason)."""
        group = self._by_env.get((client.env, client.kind))
        if group is None or client not in group:
            return
        group.discard(client)
        if not group:
            del self._by_env[(client.env, client.kind)]
        mine = self._by_key.get(client.key_hash)
        if mine is not None:
            mine.discard(client)
            if not mine:
                del self._by_key[client.key_hash]
        self._expiring.discard(client)
        self._count -= 1
        self._gauges[client.kind].dec()
        if not client.closed:
            client.close("client disconnected")
        self._metrics.stream_closed.labels(client.close_reason or "unknown").inc()

    # -- publishing -----------------------------------------------------------------------

    def publish_sdk(
        self, env: str, version: int, patches: Sequence[PatchEvent] | None, put_event: bytes
    ) -> None:
        """A new version for the SDK streams of ``env``: ``patches`` (PatchEvents, an
        unbroken chain ending at ``version``) or, when None, only the ``put``."""
        clients = self._by_env.get((env, SDK))
        if not clients:
            return
        chain = patches or ()
        # base version -> (the events from there joined, the same as one HTTP chunk)
        joined: dict[int, tuple[bytes, bytes]] = {}
        put: tuple[bytes, bytes] | None = None
        puts = sent_patches = 0
        for client in list(clients):
            if client.version >= version:
                continue
            frames = joined.get(client.version)
            if frames is None:
                start = next((i for i, p in enumerate(chain) if p.base == client.version), None)
                if start is None:
                    if put is None:
                        put = (put_event, chunk(put_event))
                    frames = put
                else:
                    data = b"".join(p.data for p in chain[start:])
                    frames = joined[client.version] = (data, chunk(data))
            if not frames[0]:
                client.version = version  # only versions that changed nothing: no event
                continue
            if frames is put:
                puts += 1
            else:
                sent_patches += 1
            if client.send(*frames):
                client.version = version
        if puts:
            self._metrics.events(SDK, "put", puts)
        if sent_patches:
            self._metrics.events(SDK, "patch", sent_patches)

    def advance_sdk(self, env: str, flags_version: int, version: int) -> None:
        """A version that changed no flag set: the SDK streams that hold the current one
        (at ``flags_version`` or later) are now at ``version``. Nothing is sent."""
        for client in self._by_env.get((env, SDK), ()):
            if flags_version <= client.version < version:
                client.version = version

    def publish_ofrep(self, env: str, version: int, event: bytes) -> None:
        clients = self._by_env.get((env, OFREP))
        if not clients:
            return
        sent = 0
        framed = chunk(event)
        for client in list(clients):
            if client.version < version and client.send(event, framed):
                client.version = version
                sent += 1
        if sent:
            self._metrics.events(OFREP, "refetchEvaluation", sent)

    # -- closing --------------------------------------------------------------------------

    def close_keys(self, key_hashes: Iterable[str]) -> None:
        """The keys were revoked: end their streams now."""
        for h in key_hashes:
            for client in list(self._by_key.get(h, ())):
                client.close("key revoked", sse.comment("key revoked"))

    def close_environment(self, env: str, reason: str) -> None:
        for kind in (SDK, OFREP):
            for client in list(self._by_env.get((env, kind), ())):
                client.close(reason, sse.comment(reason))

    def close_all(self, reason: str, final: bytes) -> None:
        for group in list(self._by_env.values()):
            for client in list(group):
                client.close(reason, final)

    def count(self, env: str, kind: str) -> int:
        return len(self._by_env.get((env, kind), ()))

    def clients(self) -> Iterable[StreamClient]:
        for group in self._by_env.values():
            yield from group

    # -- background -----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.spawn(self._keepalive(), "keepalive")
        self._tasks.spawn(self._expiry(), "expiry")
        self._tasks.spawn(self._reap(), "reap")
        if self._lifetime > 0:
            self._tasks.spawn(self._lifetimes(), "lifetime")

    def farewell_for_lifetime(self) -> bytes:
        """The bytes that end a stream at its maximum lifetime: a ``retry:`` drawn
        uniformly across the reconnect window, and why."""
        delay = random.randint(0, self._window_ms)  # spreads load; not a secret
        return sse.retry(delay) + sse.comment("stream lifetime reached; reconnect")

    def end_lifetimes(self, now: float | None = None) -> int:
        """End every stream past its maximum lifetime; returns how many."""
        now = time.monotonic() if now is None else now
        ended = 0
        queue = self._by_age
        while queue:
            client = queue[0]
            if not client.closed and client.ends_at is not None and client.ends_at > now:
                break
            queue.popleft()
            if not client.closed:
                client.close("lifetime", self.farewell_for_lifetime())
                ended += 1
        return ended

    async def _lifetimes(self) -> None:
        sweep = min(self._options.expiry_sweep_seconds, self._lifetime)
        while True:
            await asyncio.sleep(sweep)
            self.end_lifetimes()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._options.keepalive_seconds)
            clients = list(self.clients())
            sent = sum(1 for client in clients if client.send(KEEPALIVE, KEEPALIVE_CHUNK))
            if sent:
                self._metrics.events("any", "keepalive", sent)

    async def _expiry(self) -> None:
        while True:
            await asyncio.sleep(self._options.expiry_sweep_seconds)
            now = time.time()
            for client in list(self._expiring):
                if client.expires_at is not None and now >= client.expires_at:
                    client.close("key expired", sse.comment("key expired"))

    async def _reap(self) -> None:
        """End the streams whose client hung up (noticed without waiting for a write)."""
        while True:
            await asyncio.sleep(1.0)
            for client in list(self.clients()):
                if client.alive is not None and not client.closed and not client.alive():
                    client.close("client disconnected")

    async def shutdown(self) -> None:
        """Stop accepting streams and tell every client to reconnect (elsewhere)."""
        self.closing = True
        final = sse.retry(self._options.shutdown_retry_ms) + sse.comment(
            "this proxy is shutting down; reconnect"
        )
        self.close_all("shutdown", final)
        await self._tasks.close()
