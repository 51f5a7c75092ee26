"""Scenario ``streams``: many server SDKs holding ``/sdk/v1/stream`` open.

Each user keeps one SSE stream (:mod:`ltsse`: a gevent socket and
:class:`crivline.sse.Parser`) and reports to locust:

- ``SSE connect`` — the time from connecting to the first ``put`` (the whole flag set);
- ``SSE patch`` — for every ``patch``, the change-to-client propagation latency: the
  time its bytes arrived at this client's socket (the kernel's time stamp, see
  :mod:`ltsse`) minus the event's ``committedAt`` (the commit in the central Postgres).
  Every sample also goes to ``--samples-file``, with the time this process read it;
- failures for a stream that cannot open or ends, and for any event whose version is
  not the successor of the one before it (``base`` must be the last version seen).

A stream that ends is reopened with ``Last-Event-ID``. The changes come from the
``writers`` scenario (or any control-API client).

    locust -f loadtests/streams.py --headless -u 1000 -r 200 -t 60s --stack .crivline/stack.json
"""

from __future__ import annotations

import time
from typing import Any

import ltlocust
import orjson
from locust import User, constant, task
from ltsse import SSEConnection, StreamError

_CONNECT = "SSE connect"
_PATCH = "SSE patch"


class StreamUser(User):
    crivline_host = "proxy"
    wait_time = constant(1)  # before reopening a stream that ended

    def on_start(self) -> None:
        index = ltlocust.next_index()
        self.auth = f"Bearer {ltlocust.pick(ltlocust.TARGET.server_keys, index)}"
        self.version: int | None = None
        self.connection: SSEConnection | None = None

    def on_stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _fire(self, name: str, millis: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=millis,
            response_length=length,
            exception=error,
            context={},
        )

    @task
    def listen(self) -> None:
        headers = {"Authorization": self.auth}
        if self.version is not None:
            headers["Last-Event-ID"] = str(self.version)
        started = time.perf_counter()
        connection = self.connection = SSEConnection(f"{self.host}/sdk/v1/stream", headers)
        try:
            connection.open()
        except (OSError, StreamError) as exc:
            self._fire(_CONNECT, (time.perf_counter() - started) * 1000, 0, exc)
            connection.close()
            return
        opened = self.version is not None  # a resume opens with patches, not a put
        try:
            while True:
                arrived, read, events = connection.read()
                if len(events) > 1:
                    patches = sum(1 for event in events if event.event == "patch")
                    if patches > 1:
                        ltlocust.STREAM_STATS["coalesced_patches"] += patches - 1
                for event in events:
                    if event.event == "patch":
                        self._patch(event.data, arrived, read)
                    elif event.event == "put":
                        if not opened:
                            millis = (time.perf_counter() - started) * 1000
                            self._fire(_CONNECT, millis, len(event.data), None)
                            ltlocust.STREAM_STATS["connects"] += 1
                            opened = True
                        else:
                            ltlocust.STREAM_STATS["puts_after_open"] += 1
                        self.version = int(event.id or 0)
        except (OSError, EOFError) as exc:
            self._fire("SSE stream", (time.perf_counter() - started) * 1000, 0, exc)
        finally:
            connection.close()
            self.connection = None

    def _patch(self, data: str, arrived: float, read: float) -> None:
        doc: dict[str, Any] = orjson.loads(data)
        version, base = doc.get("version"), doc.get("base")
        if self.version is not None and base != self.version:
            error = AssertionError(f"patch {base}→{version} after version {self.version}")
            self._fire(_PATCH, 0, len(data), error)
            self.version = version
            return
        self.version = version
        committed = doc.get("committedAt")
        ltlocust.STREAM_STATS["patches"] += 1
        if not isinstance(committed, (int, float)):
            ltlocust.STREAM_STATS["without_commit_time"] += 1
            return
        latency = ltlocust.record_propagation(arrived, read, committed, int(version or 0))
        self._fire(_PATCH, latency * 1000, len(data), None)
