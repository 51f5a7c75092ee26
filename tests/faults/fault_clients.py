"""SDK-like clients on every edge that record every version they observe.

- :class:`StreamWatcher`: one logical ``/sdk/v1/stream`` subscription. It keeps the flag
  set it was sent (the ``put``, then each ``patch`` applied), and when the stream breaks
  it reconnects the way an EventSource behind a load balancer does — after the
  server's ``retry:`` hint, to the next proxy process of its edge that answers — with
  ``Last-Event-ID``. Every event id it sees must be higher than the one before, on the
  same logical stream; a patch must start where the client is (its ``base``).
- :class:`Poller`: ``/sdk/v1/flags`` with ``If-None-Match``, sticky to one proxy
  process and failing over to the next on a connection error. The flag set's version
  its ETag names must never go down, nor the ``Crivline-Version`` of an answer with a
  body (a 200). A 304 says the client's flag set is current: it comes from a process
  that holds at least that flag set's version, perhaps without the key or plan versions
  after it that another process had (they change nothing the poller holds).

Roaming clients (``edge`` ``"roam"``) hold the proxies of every edge and move on to a
process of the next edge every few answers (a poller) or every couple of seconds (a
stream, which ends its connection and resumes there by ``Last-Event-ID``) — an SDK behind
a DNS or load-balancer change. Versions are global, so the same rules hold across edges,
with one exception the proxy announces: a stream whose resume the edge could not honour
in its bounded wait starts over from that edge's state (``Crivline-Resume: behind``); it
is counted, not a violation. ``Crivline-Resume: other-history`` always is one — every
version in the suite comes from one history.

Anything that breaks those rules, or a valid key refused, is a violation, kept with the
time and the proxy that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from crivline import sse
from crivline.edge_store import apply_delta
from crivline.snapshot import serialize_flag_set

CONNECT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=3, sock_connect=3, sock_read=None)
MAX_RETRY_SECONDS = 2.0
ROAM = "roam"  # the edge name of clients that move between edges
ROAM_STREAM_SECONDS = 1.5  # a roaming stream moves on after this long on one process
ROAM_POLLS = 3  # a roaming poller moves on after this many answers from one process


@dataclass
class Observation:
    at: float
    version: int
    kind: str  # put | patch | poll
    proxy: str


@dataclass
class StreamWatcher:
    edge: str
    env: str
    key: str
    proxies: list[tuple[str, str]]  # (name, url) of the edge's proxy processes
    home: int = 0
    observed: list[Observation] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    flag_set: dict[str, Any] | None = None
    version: int = 0
    connects: int = 0
    resumes: int = 0  # connections opened with Last-Event-ID
    statuses: list[int] = field(default_factory=list)  # non-200 answers
    got_put: asyncio.Event = field(default_factory=asyncio.Event)
    roam_after: float | None = None  # seconds on one process before moving on (roaming)
    restarts_behind: int = 0  # resumes an edge could not honour in time (it said so)
    _task: asyncio.Task[None] | None = None
    _restarting: bool = False  # this connection said it starts over: its put may be older

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stream {self.edge} {self.env}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    def flag_set_bytes(self) -> bytes | None:
        return serialize_flag_set(self.flag_set) if self.flag_set is not None else None

    def _violation(self, proxy: str, text: str) -> None:
        self.violations.append(f"{time.time():.3f} {self.edge}/{proxy} stream {self.env}: {text}")

    async def _run(self) -> None:
        index = self.home
        retry = 0.2
        async with aiohttp.ClientSession(timeout=CONNECT_TIMEOUT) as session:
            while True:
                name, url = self.proxies[index % len(self.proxies)]
                retry = await self._connect(session, name, url, retry)
                # Like an EventSource: wait the server's retry hint, then connect again;
                # a load balancer would hand us whichever process answers.
                await asyncio.sleep(retry)
                index += 1

    async def _connect(
        self, session: aiohttp.ClientSession, name: str, url: str, retry: float
    ) -> float:
        headers = {"Authorization": f"Bearer {self.key}"}
        if self.version:
            headers["Last-Event-ID"] = str(self.version)
        parser = sse.Parser()
        try:
            async with session.get(url + "/sdk/v1/stream", headers=headers) as response:
                if response.status != 200:
                    self.statuses.append(response.status)
                    body = await response.read()
                    if response.status in (401, 403):
                        self._violation(
                            name, f"a valid key was refused ({response.status}: {body[:200]!r})"
                        )
                    return retry
                self.connects += 1
                if self.version:
                    self.resumes += 1
                resume = response.headers.get("Crivline-Resume")
                if resume == "other-history":
                    self._violation(name, f"resume from {self.version} taken for another history")
                self._restarting = resume == "behind"
                if self._restarting:
                    self.restarts_behind += 1
                if self.roam_after is None:
                    await self._read(response, name, parser)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.roam_after):
                            await self._read(response, name, parser)
                    return 0.05  # moving on by choice: reconnect at once
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return retry if parser.retry is None else min(parser.retry / 1000, MAX_RETRY_SECONDS)

    async def _read(self, response: aiohttp.ClientResponse, name: str, parser: sse.Parser) -> None:
        while True:
            chunk = await response.content.readany()
            if not chunk:
                return
            for event in parser.feed(chunk):
                self._event(name, event)

    def _event(self, proxy: str, event: sse.Event) -> None:
        if event.event not in ("put", "patch"):
            self._violation(proxy, f"unexpected event {event.event!r}")
            return
        try:
            version = int(event.id or "")
            body = orjson.loads(event.data)
        except (ValueError, orjson.JSONDecodeError) as exc:
            self._violation(proxy, f"unreadable {event.event}: {exc}")
            return
        starting_over = self._restarting and event.event == "put" and version < self.version
        self._restarting = False
        if self.observed and version <= self.version and not starting_over:
            what = "repeated" if version == self.version else "went back"
            self._violation(proxy, f"version {what}: {self.version} then {event.event} {version}")
        if starting_over:
            self.version = version
        if event.event == "put":
            self.flag_set = body
        else:
            if body.get("version") != version:
                self._violation(proxy, f"patch id {version} carries version {body.get('version')}")
            if body.get("base") != self.version or self.flag_set is None:
                self._violation(
                    proxy, f"patch {body.get('base')}->{version} sent to a client at {self.version}"
                )
            if self.flag_set is not None:
                self.flag_set = apply_delta(self.flag_set, body)
        self.version = max(self.version, version)
        self.observed.append(Observation(time.time(), version, event.event, proxy))
        if event.event == "put":
            self.got_put.set()


@dataclass
class Poller:
    edge: str
    env: str
    key: str
    proxies: list[tuple[str, str]]
    interval: float = 0.3
    home: int = 0
    observed: list[Observation] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    version: int = 0
    etag_version: int = 0  # the flag set's version the ETag it holds names
    body: bytes | None = None
    failovers: int = 0
    roam_every: int = 0  # answers from one process before moving on (0: sticky)
    roams: int = 0
    statuses: list[int] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"poll {self.edge} {self.env}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        index = self.home
        etag: str | None = None
        timeout = aiohttp.ClientTimeout(total=5)
        answers = 0
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if self.roam_every and answers >= self.roam_every:
                    index, answers = index + 1, 0
                    self.roams += 1
                name, url = self.proxies[index % len(self.proxies)]
                headers = {"Authorization": f"Bearer {self.key}"}
                if etag is not None:
                    headers["If-None-Match"] = etag
                try:
                    async with session.get(url + "/sdk/v1/flags", headers=headers) as response:
                        body = await response.read()
                        if response.status in (200, 304):
                            answers += 1
                            version = int(response.headers["Crivline-Version"])
                            if response.status == 200:
                                self._saw(name, version, response.status)
                                etag = response.headers.get("ETag")
                                self._saw_etag(name, etag)
                                self.body = body
                            else:
                                self._saw_current(name, version)
                        else:
                            self.statuses.append(response.status)
                            if response.status in (401, 403):
                                self.violations.append(
                                    f"{time.time():.3f} {self.edge}/{name} poll {self.env}: "
                                    f"a valid key was refused ({response.status})"
                                )
                except (aiohttp.ClientError, OSError, TimeoutError):
                    index += 1  # this process is gone: fail over to the next one
                    self.failovers += 1
                    await asyncio.sleep(0.05)
                    continue
                await asyncio.sleep(self.interval)

    def _saw_etag(self, proxy: str, etag: str | None) -> None:
        try:
            named = int((etag or "").strip('"').split("-", 1)[0])
        except ValueError:
            self.violations.append(f"{time.time():.3f} {self.edge}/{proxy} poll: ETag {etag!r}")
            return
        if named < self.etag_version:
            self.violations.append(
                f"{time.time():.3f} {self.edge}/{proxy} poll {self.env}: ETag went back "
                f"{self.etag_version} -> {named}"
            )
        self.etag_version = max(self.etag_version, named)

    def _saw_current(self, proxy: str, version: int) -> None:
        """A 304: the process holds the flag set of the ETag, so its version is not below
        that flag set's."""
        if version < self.etag_version:
            self.violations.append(
                f"{time.time():.3f} {self.edge}/{proxy} poll {self.env}: 304 at version "
                f"{version} for a flag set of version {self.etag_version}"
            )
        if version > self.version:
            self.observed.append(Observation(time.time(), version, "poll", proxy))
            self.version = version

    def _saw(self, proxy: str, version: int, status: int) -> None:
        if version < self.version:
            self.violations.append(
                f"{time.time():.3f} {self.edge}/{proxy} poll {self.env}: version went back "
                f"{self.version} -> {version} (HTTP {status})"
            )
        if version != self.version:
            self.observed.append(Observation(time.time(), version, "poll", proxy))
        self.version = max(self.version, version)


@dataclass
class Clients:
    watchers: list[StreamWatcher]
    pollers: list[Poller]

    @classmethod
    def for_cluster(cls, cluster: Any) -> Clients:
        watchers: list[StreamWatcher] = []
        pollers: list[Poller] = []
        for edge in cluster.edges:
            proxies = [(p.name, p.url) for p in edge.proxies]
            for i, env in enumerate(cluster.environment_ids()):
                key = cluster.tenant_of(env).stream_keys[env]
                home = i % len(proxies)
                watchers.append(StreamWatcher(edge.name, env, key, proxies, home=home))
                pollers.append(Poller(edge.name, env, key, proxies, home=home + 1))
        # Clients that move between edges: every process of every edge, taken in turn
        # so that each move lands on another edge (and, round after round, another process).
        by_edge = [[(p.name, p.url) for p in edge.proxies] for edge in cluster.edges]
        everywhere = [
            column[i % len(column)]
            for i in range(max(len(c) for c in by_edge))
            for column in by_edge
        ]
        for i, env in enumerate(cluster.environment_ids()):
            key = cluster.tenant_of(env).stream_keys[env]
            watchers.append(
                StreamWatcher(ROAM, env, key, everywhere, home=i, roam_after=ROAM_STREAM_SECONDS)
            )
            pollers.append(Poller(ROAM, env, key, everywhere, home=i + 1, roam_every=ROAM_POLLS))
        return cls(watchers, pollers)

    async def start(self, within: float = 15.0) -> None:
        for client in [*self.watchers, *self.pollers]:
            client.start()
        waits = [w.got_put.wait() for w in self.watchers]
        await asyncio.wait_for(asyncio.gather(*waits), within)

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in [*self.watchers, *self.pollers]))

    def roaming(self) -> str:
        """What the clients that move between edges did (for the report)."""
        polls = [p for p in self.pollers if p.edge == ROAM]
        streams = [w for w in self.watchers if w.edge == ROAM]
        return (
            f"roaming: {sum(p.roams for p in polls)} poller moves, "
            f"{sum(w.resumes for w in streams)} stream resumes on another edge, "
            f"{sum(w.restarts_behind for w in streams)} started over (edge behind)"
        )

    def roamed(self) -> bool:
        """Every roaming client moved at least once (the run exercised them)."""
        return all(p.roams for p in self.pollers if p.edge == ROAM) and all(
            w.resumes for w in self.watchers if w.edge == ROAM
        )

    def violations(self) -> list[str]:
        out: list[str] = []
        for client in [*self.watchers, *self.pollers]:
            out += client.violations
        return out
