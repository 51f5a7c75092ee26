"""A small HTTP/1.1 load generator in Python: the bench's fallback when ``wrk`` is absent.

Keep-alive connections on uvloop, each sending its next request as soon as the answer
to the previous one has arrived (closed loop, like ``wrk``). Requests are pre-built
bytes; with ``--vary`` the body's ``{n}`` is replaced by a number that is new for every
request (a new evaluation context each time). It parses just enough of each answer
(status line, ``Content-Length``) to count it. Prints one JSON line:
``{"requests", "seconds", "bytes", "statuses", "errors", "p50_ms", "p99_ms"}``.

It costs far more CPU per request than ``wrk``, so it runs out of breath sooner; the
bench report says which generator it used and how much CPU the generator took.

    python loadtests/hammer.py --url http://127.0.0.1:8080/sdk/v1/flags \\
        -H 'Authorization: Bearer crv_srv_…' --connections 50 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from urllib.parse import urlsplit

import uvloop


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []


class Connection(asyncio.Protocol):
    def __init__(self, build: object, stats: Stats, deadline: float, done: asyncio.Future[None]):
        self.build = build
        self.stats = stats
        self.deadline = deadline
        self.done = done
        self.buffer = b""
        self.need = -1  # bytes of the current answer (head + body), once the head is in
        self.status = 0
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        now = time.perf_counter()
        if now >= self.deadline:
            self.transport.close()
            return
        self.sent = now
        self.transport.write(self.build())  # type: ignore[operator]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                self.status = int(head[9:12])
                length = 0
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                self.need = end + 4 + length
            if len(self.buffer) < self.need:
                return
            stats = self.stats
            stats.requests += 1
            stats.bytes += self.need
            stats.statuses[self.status] = stats.statuses.get(self.status, 0) + 1
            stats.latencies.append(time.perf_counter() - self.sent)
            self.buffer = self.buffer[self.need :]
            self.need = -1
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.stats.errors += 1
        if not self.done.done():
            self.done.set_result(None)


def request_builder(args: argparse.Namespace) -> object:
    parts = urlsplit(args.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [f"{args.method} {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port or 80}"]
    head += args.header
    body: str = args.body or ""
    if not args.vary:
        data = body.encode()
        length = [f"Content-Length: {len(data)}"] if data or args.method == "POST" else []
        fixed = ("\r\n".join(head + length) + "\r\n\r\n").encode() + data
        return lambda: fixed
    counter = itertools.count()
    prefix = "\r\n".join(head)

    def build() -> bytes:
        data = body.replace("{n}", str(next(counter))).encode()
        return f"{prefix}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data

    return build


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    stats = Stats()
    build = request_builder(args)
    started = time.perf_counter()
    deadline = started + args.duration
    waits = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(
            lambda d=done: Connection(build, stats, deadline, d),
            parts.hostname,
            parts.port or 80,
        )
        waits.append(done)
    await asyncio.wait_for(asyncio.gather(*waits), args.duration + 10)
    seconds = time.perf_counter() - started
    latencies = sorted(stats.latencies)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "requests": stats.requests,
        "seconds": seconds,
        "bytes": stats.bytes,
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "errors": stats.errors,
        "p50_ms": pct(0.5) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("--body", default="")
    parser.add_argument("--vary", action="store_true", help="replace {n} in the body per request")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
