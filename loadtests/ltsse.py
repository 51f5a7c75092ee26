"""A lightweight SSE client for locust: one gevent socket, HTTP/1.1, chunked decoding.

Thousands of these run in one locust process, so each does as little as it can: one
``recvmsg`` per wake-up, the chunked framing undone in place, and
:class:`crivline.sse.Parser` for the events.

Each read reports two times. ``arrived``: when the kernel received the bytes
(``SO_TIMESTAMPNS``, the time stamp of the last segment the read consumed) — the
moment the change reached this client, whatever this process was busy with. ``read``:
when this process got to them — later by however long locust itself was busy (with
10,000 streams in one process, reading them all takes a while). Where the kernel gives
no time stamp, ``arrived`` is ``read``.
"""

from __future__ import annotations

import contextlib
import struct
import time
from urllib.parse import urlsplit

from gevent import socket

from crivline.sse import Event, Parser

_RECV = 65536
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux
_ANCILLARY = socket.CMSG_SPACE(16)


class StreamError(Exception):
    """The stream could not be opened (status, body) or broke mid-way."""


class Dechunker:
    """Incremental HTTP/1.1 ``Transfer-Encoding: chunked`` decoder."""

    __slots__ = ("_buffer", "_left", "_state", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        self._state = 0  # 0: size line, 1: data, 2: CRLF after data
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        i, n = 0, len(buffer)
        while i < n and not self.done:
            if self._state == 0:
                end = buffer.find(b"\r\n", i)
                if end < 0:
                    break
                size = int(buffer[i:end].split(b";", 1)[0], 16)
                i = end + 2
                if size == 0:
                    self.done = True
                    break
                self._left, self._state = size, 1
            elif self._state == 1:
                take = min(self._left, n - i)
                out.append(buffer[i : i + take])
                i += take
                self._left -= take
                if self._left == 0:
                    self._state = 2
            else:
                if n - i < 2:
                    break
                i += 2
                self._state = 0
        self._buffer = buffer[i:]
        return out[0] if len(out) == 1 else b"".join(out)


class SSEConnection:
    def __init__(self, url: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = headers
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self.parser = Parser()
        self._dechunker: Dechunker | None = None
        self._pending = b""

    def open(self) -> None:
        """Connect and read the response head; raises :class:`StreamError` unless 200."""
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):  # without kernel time stamps, arrival = read
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += ["Accept: text/event-stream", "Cache-Control: no-cache"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(_RECV)
            if not chunk:
                raise StreamError("connection closed before the response head")
            head += chunk
            if len(head) > 65536:
                raise StreamError("response head too large")
        raw_head, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.response_headers[name.strip().lower()] = value.strip()
        if "chunked" in self.response_headers.get("transfer-encoding", "").lower():
            self._dechunker = Dechunker()
        if self.status != 200:
            body = self._decode(rest)
            raise StreamError(f"HTTP {self.status}: {body[:300].decode(errors='replace')}")
        self._pending = rest

    def _decode(self, data: bytes) -> bytes:
        return self._dechunker.feed(data) if self._dechunker is not None else data

    def read(self) -> tuple[float, float, list[Event]]:
        """Wait for bytes: when they arrived, when they were read, and the events they
        completed. Raises EOFError when the server ends the stream."""
        if self._pending:
            data, self._pending = self._pending, b""
            read = arrived = time.time()
        else:
            assert self.sock is not None
            data, ancillary, _flags, _addr = self.sock.recvmsg(_RECV, _ANCILLARY)
            read = arrived = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    arrived = seconds + nanoseconds / 1e9
        if not data:
            raise EOFError("the server closed the stream")
        payload = self._decode(data)
        events = self.parser.feed(payload) if payload else []
        if self._dechunker is not None and self._dechunker.done:
            self._pending = b""
            if not events:
                raise EOFError("the server ended the stream")
        return arrived, read, events

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
