"""The baseline: the least an aiohttp + uvloop server can do for the same requests.

Every bench run measures this next to the proxy, on the same machine in the same
minutes, so the proxy's figures read as ratios that do not depend on how fast or how
busy the machine is. It is configured like the proxy (uvloop, no access log, the same
listen backlog) and does nothing else:

- ``GET /bytes`` — precomputed bytes (``--body-file``: the bench passes the proxy's own
  flag set, so the size is the same) with a constant ETag; 304 when ``If-None-Match``
  is that ETag. The polling endpoint's counterpart.
- ``POST /json`` — reads the body, parses it as JSON (orjson, as the proxy does) and
  answers a small JSON document. The OFREP endpoints' counterpart.

    python loadtests/baseline.py --port 9000 --body-file flagset.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from pathlib import Path

import orjson
import uvloop
from aiohttp import web


def create_app(body: bytes) -> web.Application:
    etag = f'"{hashlib.blake2b(body, digest_size=8).hexdigest()}"'

    async def flag_set(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, headers={"ETag": etag}, content_type="application/json")

    async def evaluate(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        context = (doc.get("context") or {}) if isinstance(doc, dict) else {}
        answer = {
            "key": "baseline",
            "value": bool(context),
            "variant": "on" if context else "off",
            "reason": "STATIC",
            "metadata": {},
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    app = web.Application()
    app.router.add_get("/bytes", flag_set)
    app.router.add_post("/json", evaluate)
    return app


async def serve(host: str, port: int, body: bytes) -> None:
    runner = web.AppRunner(create_app(body), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"baseline listening on http://{host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.body_file.read_bytes()))


if __name__ == "__main__":
    main()
