"""Server-Sent Events as exact bytes: building events, and reading them back.

The wire format is the WHATWG HTML "server-sent events" one. The builders here return
the complete bytes of one event, so a server builds an event once and writes the same
object to every client; the proxy does that for its ``put``/``patch``/
``refetchEvaluation`` events, and the load tests use :class:`Parser` to read streams.

::

    >>> event(b'{"a":1}', name="put", id=12)
    b'id: 12\\nevent: put\\ndata: {"a":1}\\n\\n'
    >>> comment("keep-alive")
    b': keep-alive\\n\\n'
    >>> retry(3000)
    b'retry: 3000\\n\\n'

Field order within an event is ``id``, ``event``, ``retry``, then ``data`` (a reader
must not care; we fix it so tests can compare bytes). Data that contains line breaks is
sent as several ``data:`` lines, which a reader joins with ``\\n``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["Event", "Parser", "comment", "event", "retry"]

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


def _field(name: str, value: str) -> bytes:
    if _FORBIDDEN_IN_FIELD.search(value):
        raise ValueError(f"an SSE {name} cannot contain line breaks or NUL: {value!r}")
    return f"{name}: {value}\n".encode()


def event(
    data: bytes,
    *,
    name: str | None = None,
    id: int | str | None = None,
    retry: int | None = None,
) -> bytes:
    """One complete event. ``data`` is sent as is (split on line breaks only)."""
    parts: list[bytes] = []
    if id is not None:
        parts.append(_field("id", str(id)))
    if name is not None:
        parts.append(_field("event", name))
    if retry is not None:
        parts.append(_retry_field(retry))
    if b"\n" in data or b"\r" in data:
        parts.extend(b"data: " + line + b"\n" for line in _LINE_BREAK.split(data))
    else:
        parts.append(b"data: " + data + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def _retry_field(milliseconds: int) -> bytes:
    if milliseconds < 0:
        raise ValueError(f"an SSE retry is a non-negative number of milliseconds: {milliseconds}")
    return b"retry: %d\n" % milliseconds


def retry(milliseconds: int) -> bytes:
    """A block that only sets the client's reconnection delay (dispatches no event)."""
    return _retry_field(milliseconds) + b"\n"


def comment(text: str = "") -> bytes:
    """A comment block: ignored by readers, keeps idle connections (and proxies) alive."""
    lines = text.splitlines() or [""]
    return b"".join((b": " + line.encode() if line else b":") + b"\n" for line in lines) + b"\n"


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, as an EventSource would see it."""

    data: str
    event: str = "message"
    id: str | None = None  # the last event id in effect when this one was dispatched


class Parser:
    """Incremental SSE reader: :meth:`feed` bytes as they arrive, get the events out.

    Follows the WHATWG processing model: any of CRLF, CR or LF ends a line; a blank
    line dispatches; ``retry`` sets :attr:`retry`; an ``id`` persists for the
    following events; comments are collected in :attr:`comments` (useful for tests of
    keep-alives).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if self._first and buffer:
            if buffer.startswith(b"\xef\xbb\xbf"):
                buffer = buffer[3:]
            if len(buffer) >= 1:
                self._first = False
        events: list[Event] = []
        for line in self._split(buffer):
            dispatched = self._line(line)
            if dispatched is not None:
                events.append(dispatched)
        return events

    def _split(self, buffer: bytes) -> Iterable[str]:
        """The complete lines of ``buffer``; the rest waits in ``_buffer``. Streams that
        end lines with LF alone (ours, and most servers') are split and decoded in one
        pass each; a CR anywhere takes the general path. A line break is never part of a
        UTF-8 sequence, so decoding the lines together or one by one gives the same text."""
        if b"\r" in buffer:
            return self._lines(buffer)
        complete, newline, self._buffer = buffer.rpartition(b"\n")
        if not newline:
            return ()
        return complete.decode("utf-8", "replace").split("\n")

    def _lines(self, buffer: bytes) -> Iterator[str]:
        start = 0
        length = len(buffer)
        while start < length:
            match = _LINE_BREAK.search(buffer, start)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == length:
                break  # a CR at the end may be the first half of a CRLF still to come
            yield buffer[start : match.start()].decode("utf-8", "replace")
            start = match.end()
        self._buffer = buffer[start:]

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        if not self._data:
            self._event = ""
            return None
        dispatched = Event("\n".join(self._data), self._event or "message", self.last_event_id)
        self._data = []
        self._event = ""
        return dispatched
