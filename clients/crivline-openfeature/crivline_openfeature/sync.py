"""Following the edge: the stream, the polling fallback, and what they report.

:class:`EdgeSync` runs on an event loop of its own (the provider gives it a thread), so
it works the same under a synchronous application and beside an application's own
event loop. It talks HTTP through ``httpx``:

- **Stream** (``GET /sdk/v1/stream``): ``put`` replaces the flag set, ``patch`` moves it
  one version on. A reconnection sends ``Last-Event-ID: <held version>``, so the edge
  answers with just the missed patches (or a ``put`` when it no longer has them). A
  patch that does not fit the held version ends the stream and resumes the same way.
  A stream that ended is reopened after the edge's ``retry:`` delay; a stream that
  cannot be opened is retried after a doubling, jittered delay (``reconnect_min`` up to
  ``reconnect_max``, Retry-After honoured), and meanwhile the flag set is **polled**.
- **Polling** (``GET /sdk/v1/flags`` with ``If-None-Match``): every ``poll_interval``
  when streaming is off, and as the fallback above. The ETag names the version.
- **401/403** end everything: the key was revoked, or is not a server key.

Nothing older than what is held is ever applied (:class:`FlagSetHolder`). Contact with
the edge is a stream open and talking (data or keep-alives) or a poll answered within
its interval; after ``stale_after`` without contact :meth:`SyncEvents.stale` is called,
and :meth:`SyncEvents.contact` when contact returns.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

import httpx
import orjson

from crivline import sse
from crivline_openfeature.errors import BadFlagSet, EdgeUnavailable, KeyRefused
from crivline_openfeature.held import Applied, FlagSetHolder, PatchGap
from crivline_openfeature.options import ProviderOptions

log = logging.getLogger("crivline_openfeature")

STREAM_PATH = "/sdk/v1/stream"
FLAGS_PATH = "/sdk/v1/flags"
_WATCH_SECONDS = 0.25


class SyncEvents(Protocol):
    def applied(self, applied: Applied) -> None:
        """A newer flag set is held."""

    def contact(self) -> None:
        """The edge answers (again)."""

    def stale(self, seconds: float) -> None:
        """No contact with the edge for ``seconds`` (past the grace period)."""

    def refused(self, error: KeyRefused) -> None:
        """The edge refused the key: syncing has stopped for good."""


@dataclass(slots=True)
class SyncStats:
    """Counters for operators and tests (read them; only the sync writes them)."""

    streams_opened: int = 0
    resumes: int = 0  # streams opened with Last-Event-ID
    puts: int = 0
    patches: int = 0
    ignored: int = 0  # puts, patches or polls not newer than the held version
    gaps: int = 0  # patches that did not fit: the stream was resumed
    polls: int = 0
    polls_not_modified: int = 0
    failures: int = 0  # stream openings and polls that failed


def etag_version(etag: str | None) -> int | None:
    """The version a flag-set ETag names (``"12-ab…"``)."""
    if not etag:
        return None
    head = etag.strip().removeprefix("W/").strip('"').split("-", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) < 19 else None


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After", "").strip()
    return float(raw) if raw.isascii() and raw.isdigit() else None


def _detail(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    detail = body.get("errorDetails") if isinstance(body, dict) else None
    return str(detail) if detail else response.reason_phrase or str(response.status_code)


class EdgeSync:
    def __init__(
        self,
        edge_url: str,
        server_key: str,
        options: ProviderOptions,
        holder: FlagSetHolder,
        events: SyncEvents,
        *,
        user_agent: str,
    ) -> None:
        self._edge_url = edge_url
        self._key = server_key
        self._options = options
        self._holder = holder
        self._events = events
        self._user_agent = user_agent
        self.stats = SyncStats()
        self._random = random.Random()
        self._streaming = False
        self._last_contact = time.monotonic()
        self._contact_until = 0.0  # a poll answer vouches for the edge until then
        self._in_contact = False
        self._stale = False
        self._retry_seconds = options.reconnect_min
        self._etag: tuple[str, int] | None = None  # (ETag, version) of the last poll

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the edge until cancelled or the key is refused."""
        options = self._options
        timeout = httpx.Timeout(
            connect=options.connect_timeout,
            read=options.request_timeout,
            write=options.request_timeout,
            pool=options.connect_timeout,
        )
        headers = {"Authorization": f"Bearer {self._key}", "User-Agent": self._user_agent}
        async with httpx.AsyncClient(
            base_url=self._edge_url, headers=headers, timeout=timeout
        ) as http:
            watch = asyncio.create_task(self._watch(), name="crivline-openfeature-watch")
            try:
                if options.stream:
                    await self._follow_stream(http)
                else:
                    await self._follow_polls(http)
            except KeyRefused as exc:
                log.error("the edge refused the server key (%d): %s", exc.status, exc.detail)
                self._events.refused(exc)
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)

    async def _follow_polls(self, http: httpx.AsyncClient) -> None:
        while True:
            try:
                await self._poll(http)
                delay = self._options.poll_interval
            except EdgeUnavailable as exc:
                self.stats.failures += 1
                log.warning("polling the edge failed: %s", exc)
                delay = max(self._options.reconnect_min, exc.retry_after or 0.0)
                delay = min(delay, self._options.poll_interval)
            await asyncio.sleep(delay)

    async def _follow_stream(self, http: httpx.AsyncClient) -> None:
        failures = 0
        while True:
            try:
                await self._stream(http)
                failures = 0
                delay = self._jitter(self._retry_seconds)
            except EdgeUnavailable as exc:
                failures += 1
                self.stats.failures += 1
                log.warning("the edge stream could not be opened (attempt %d): %s", failures, exc)
                delay = self._backoff(failures, exc.retry_after)
                await self._fall_back(http, delay)
                continue
            await asyncio.sleep(delay)

    async def _fall_back(self, http: httpx.AsyncClient, seconds: float) -> None:
        """Poll now and every ``poll_interval`` until it is time to try the stream again."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                await self._poll(http)
            except EdgeUnavailable as exc:
                self.stats.failures += 1
                log.debug("fallback poll failed: %s", exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(self._options.poll_interval, remaining))

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        options = self._options
        delay = min(options.reconnect_max, options.reconnect_min * 2 ** min(failures - 1, 30))
        return max(self._jitter(delay), min(retry_after or 0.0, options.reconnect_max))

    def _jitter(self, seconds: float) -> float:
        return seconds * self._random.uniform(0.5, 1.0)

    # -- one stream ---------------------------------------------------------------------

    async def _stream(self, http: httpx.AsyncClient) -> None:
        """One stream, until the edge ends it, it goes silent or a patch does not fit.
        Raises EdgeUnavailable when it cannot be opened, KeyRefused on 401/403."""
        options = self._options
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        held = self._holder.version
        if held is not None:
            headers["Last-Event-ID"] = str(held)
        timeout = httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.request_timeout,
            pool=options.connect_timeout,
        )
        opened = False
        try:
            async with http.stream("GET", STREAM_PATH, headers=headers, timeout=timeout) as answer:
                await self._check(answer, streaming=True)
                opened = True
                self.stats.streams_opened += 1
                if held is not None:
                    self.stats.resumes += 1
                self._streaming = True
                self._touch()
                try:
                    await self._read(answer)
                finally:
                    self._streaming = False
                    self._last_contact = time.monotonic()
        except httpx.TransportError as exc:
            if not opened:
                raise EdgeUnavailable(f"{type(exc).__name__}: {exc}") from None
            log.info("the edge stream ended: %s", type(exc).__name__)

    async def _read(self, answer: httpx.Response) -> None:
        parser = sse.Parser()
        try:
            async for chunk in answer.aiter_bytes():
                self._touch()
                for event in parser.feed(chunk):
                    if not self._on_event(event):
                        return
                if parser.retry is not None:
                    self._retry_seconds = min(parser.retry / 1000, self._options.reconnect_max)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
            log.info("the edge stream ended: %s", type(exc).__name__)

    def _on_event(self, event: sse.Event) -> bool:
        """Apply one event; False when the stream must be resumed from the held version."""
        try:
            if event.event == "put":
                version = int(event.id or "")
                self.stats.puts += 1
                self._applied(self._holder.put(version, orjson.loads(event.data)))
            elif event.event == "patch":
                self.stats.patches += 1
                self._applied(self._holder.patch(orjson.loads(event.data)))
        except PatchGap as gap:
            self.stats.gaps += 1
            log.info("%s; resuming the stream", gap)
            return False
        except (ValueError, BadFlagSet) as exc:  # orjson.JSONDecodeError is a ValueError
            log.error("the edge sent a %s that cannot be applied: %s", event.event, exc)
            return False
        return True

    # -- one poll -----------------------------------------------------------------------

    async def _poll(self, http: httpx.AsyncClient) -> None:
        self.stats.polls += 1
        headers: dict[str, str] = {}
        held = self._holder.version
        if self._etag is not None and self._etag[1] == held:
            headers["If-None-Match"] = self._etag[0]
        try:
            answer = await http.get(FLAGS_PATH, headers=headers)
        except httpx.TransportError as exc:
            raise EdgeUnavailable(f"{type(exc).__name__}: {exc}") from None
        if answer.status_code == 304:
            self.stats.polls_not_modified += 1
            self._polled()
            return
        await self._check(answer, streaming=False)
        etag = answer.headers.get("ETag")
        version = etag_version(etag)
        if version is None:
            version = etag_version(answer.headers.get("Crivline-Version"))
        if version is None:
            raise EdgeUnavailable("the flag set came without a version (ETag)")
        try:
            document = orjson.loads(answer.content)
            self._applied(self._holder.put(version, document))
        except (ValueError, BadFlagSet) as exc:
            raise EdgeUnavailable(f"the polled flag set cannot be applied: {exc}") from None
        if etag:
            self._etag = (etag, version)
        self._polled()

    def _polled(self) -> None:
        self._contact_until = time.monotonic() + self._options.poll_interval
        self._touch()

    # -- answers and contact ------------------------------------------------------------

    async def _check(self, answer: httpx.Response, *, streaming: bool) -> None:
        status = answer.status_code
        if status == 200:
            kind = answer.headers.get("Content-Type", "")
            if streaming and not kind.startswith("text/event-stream"):
                raise EdgeUnavailable(f"the stream answered {kind or 'no content type'}")
            return
        await answer.aread()
        if status in (401, 403):
            what = "revoked or unknown" if status == 401 else "not a server key"
            raise KeyRefused(status, f"{_detail(answer)} ({what})")
        raise EdgeUnavailable(f"HTTP {status}: {_detail(answer)}", _retry_after(answer))

    def _applied(self, applied: Applied | None) -> None:
        if applied is None:
            self.stats.ignored += 1
            return
        self._events.applied(applied)

    def _touch(self) -> None:
        self._last_contact = time.monotonic()
        if not self._in_contact or self._stale:
            self._in_contact = True
            self._stale = False
            self._events.contact()

    async def _watch(self) -> None:
        grace = self._options.stale_after
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            now = time.monotonic()
            if self._streaming and now - self._last_contact <= grace:
                continue
            if now < self._contact_until:
                continue
            since = max(self._last_contact, self._contact_until)
            if now - since > grace and not self._stale:
                self._stale = True
                self._in_contact = False
                self._events.stale(now - since)
