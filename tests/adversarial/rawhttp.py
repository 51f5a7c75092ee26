"""A deliberately naive HTTP/1.1 client on raw sockets, for sending what real clients won't.

``http.client`` and aiohttp refuse or normalise odd methods, control characters, bytes
that are not UTF-8, duplicate or oversized headers; the adversarial tests need to send
exactly those. :func:`exchange` writes the given bytes, then reads one answer within a
hard deadline — a server that does not answer in time is a :class:`Hang`, never a test
that waits forever. Every request says ``Connection: close`` (unless the caller sends its
own), so the answer ends with the connection; an event stream is read until its first
bytes and then dropped.

Blocking on purpose: the Hypothesis tests run in a worker thread (``asyncio.to_thread``)
while the servers keep running on the test's event loop.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_TIMEOUT = 10.0


class Hang(AssertionError):
    """The server did not finish answering within the deadline."""


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased
    body: bytes
    seconds: float
    head: bool = False  # the answer to a HEAD request (headers only)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        return f"{self.status} {self.reason} {self.headers} {self.body[:600]!r}"


def request_bytes(
    method: bytes | str,
    target: bytes | str,
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    body: bytes | None = None,
    *,
    host: str = "127.0.0.1",
    close: bool = True,
) -> bytes:
    """One request, exactly as given (a ``Content-Length`` is added for a body, unless
    the caller set one or ``Transfer-Encoding``)."""

    def raw(value: bytes | str) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: " + host.encode()]
    names = set()
    for name, value in headers:
        names.add(raw(name).lower())
        lines.append(raw(name) + b": " + raw(value))
    if close and b"connection" not in names:
        lines.append(b"Connection: close")
    if body is not None and not names & {b"content-length", b"transfer-encoding"}:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def exchange(
    port: int, data: bytes, *, timeout: float = DEFAULT_TIMEOUT, host: str = "127.0.0.1"
) -> Reply:
    """Send ``data``; read one answer (headers, then the body by its framing)."""
    started = time.monotonic()
    deadline = started + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything we sent
        buffer = bytearray()

        def more() -> bool:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Hang(f"no complete answer within {timeout}s; got {bytes(buffer[:300])!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise Hang(
                    f"no complete answer within {timeout}s; got {bytes(buffer[:300])!r}"
                ) from None
            except ConnectionResetError:
                return False
            buffer.extend(chunk)
            return bool(chunk)

        while b"\r\n\r\n" not in buffer:
            if not more():
                raise ConnectionError(f"connection closed before an answer: {bytes(buffer)!r}")
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _version, status, *reason = status_line.split(" ", 2)
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        reply = Reply(int(status), reason[0] if reason else "", headers, b"", 0.0)
        reply.head = data.split(b" ", 1)[0].upper() == b"HEAD"
        buffer = bytearray(rest)
        if reply.head:
            reply.body = b""  # an answer to HEAD has no body, whatever it announces
        elif reply.content_type == "text/event-stream":
            # A stream: its first bytes are enough; hang up.
            if not buffer:
                more()
            reply.body = bytes(buffer)
        elif (reply.header("transfer-encoding") or "").lower() == "chunked":
            reply.body = _dechunk(buffer, more)
        elif (length := reply.header("content-length")) is not None:
            while len(buffer) < int(length):
                if not more():
                    break
            reply.body = bytes(buffer[: int(length)])
        elif reply.status in (204, 304) or 100 <= reply.status < 200:
            reply.body = b""
        else:
            while more():
                pass
            reply.body = bytes(buffer)
        reply.seconds = time.monotonic() - started
        return reply


def _dechunk(buffer: bytearray, more: Any) -> bytes:
    out = bytearray()
    while True:
        while b"\r\n" not in buffer:
            if not more():
                return bytes(out)
        size_line, _, rest = bytes(buffer).partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        buffer[:] = rest
        if size == 0:
            return bytes(out)
        while len(buffer) < size + 2:
            if not more():
                return bytes(out + buffer)
        out += buffer[:size]
        buffer[:] = buffer[size + 2 :]


def call(
    port: int,
    method: bytes | str,
    target: bytes | str,
    headers: Iterable[tuple[bytes | str, bytes | str]] = (),
    body: bytes | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Reply:
    return exchange(port, request_bytes(method, target, headers, body), timeout=timeout)
