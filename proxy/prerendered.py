"""Answers of the hot routes written as bytes: the head rendered once per set of headers.

aiohttp builds every answer's headers in a ``CIMultiDict``, then adds ``Content-Length``,
``Date`` and ``Server`` and serialises them, each request again. The polling and OFREP
single answers of a keep-alive HTTP/1.1 request carry the same few headers for as long
as an environment version is served, so :class:`Prerendered` keeps its headers in a
plain dict, looks the rendered head up by their values (rendered once per distinct set)
and writes head and body in one ``write_eof`` of the request's writer. The bytes are
the ones aiohttp would send: the same header order (the handler's, then what the
middleware adds, then ``Content-Length``, ``Date``, ``Server``), the same ``Date``
(whole seconds, the clock read per request as aiohttp does) — pinned by
``tests/proxy/test_proxy_fastlane.py`` against a ``web.Response``.

A request aiohttp would answer differently (HTTP/1.0, or one that closes the connection:
a ``Connection`` header to add) gets a ``web.Response`` (:func:`respond`).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 404: "Not Found"}
_HEADS_MAX = 4096


class Prerendered(web.StreamResponse):
    """A finished answer (status, headers, body) for a keep-alive HTTP/1.1 request.

    Only what aiohttp's connection handler, its access log and this proxy's middleware
    use of a response is provided (status, headers, body, ``prepared``, ``keep_alive``,
    ``content_length``, ``body_length``, ``prepare``/``write_eof``); aiohttp's own
    state is not built at all."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        # StreamResponse.__init__ is deliberately not called: none of its state is used.
        self._status = status
        self._headers = headers  # type: ignore[assignment] # a plain dict: see headers
        self._body_bytes = body
        self._sent = False
        self._keep_alive = True

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Any:  # a plain dict: only read and assigned by name, ours
        return self._headers

    @property
    def body(self) -> bytes:
        """The body, as ``web.Response.body`` reads."""
        return self._body_bytes

    @property
    def prepared(self) -> bool:
        return self._sent

    @property
    def keep_alive(self) -> bool:
        return True

    @property
    def content_length(self) -> int:
        return len(self._body_bytes)

    @content_length.setter
    def content_length(self, value: int | None) -> None:
        raise RuntimeError("a pre-rendered answer's length is its body's")

    @property
    def body_length(self) -> int:
        return len(self._body_bytes)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._sent:
            return None
        self._sent = True
        writer = request.writer
        await writer.write_eof(self._head() + self._body_bytes)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        return None  # all of it went in prepare

    def _head(self) -> bytes:
        status, body = self._status, self._body_bytes
        fields = tuple(self._headers.items())
        key = (status, len(body), fields)
        head = _heads.get(key)
        if head is None:
            lines = [f"HTTP/1.1 {status} {_REASONS[status]}\r\n"]
            lines.extend(f"{name}: {value}\r\n" for name, value in fields)
            if status != 304:
                lines.append(f"Content-Length: {len(body)}\r\n")
            head = "".join(lines).encode()
            if len(_heads) >= _HEADS_MAX:
                _heads.clear()  # versions that left: cheaper to render again
            _heads[key] = head
        return head + _date_and_server()


# (status, body length, headers) -> the head up to Date: one entry per version served.
_heads: dict[tuple[int, int, tuple[tuple[str, str], ...]], bytes] = {}
_date: list[Any] = [0, b""]  # the second, its Date and Server lines and the blank line


def _date_and_server() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        stamp = formatdate(now, usegmt=True)
        _date[0], _date[1] = now, f"Date: {stamp}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode()
    lines: bytes = _date[1]
    return lines


def respond(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    body: bytes | None = None,
    content_type: str | None = None,
) -> web.StreamResponse:
    """The answer as :class:`Prerendered` when aiohttp would add no ``Connection`` header
    to it (keep-alive HTTP/1.1), else as a ``web.Response`` with the same headers."""
    if request.version == _HTTP11 and request.keep_alive and status in _REASONS:
        if content_type is not None:
            headers["Content-Type"] = content_type
        return Prerendered(status, headers, body or b"")
    return web.Response(status=status, body=body, headers=headers, content_type=content_type)


_HTTP11 = HttpVersion11
