"""``crivline proxy``: run the proxy — one process, or ``--workers N`` on one port.

``run(settings)`` is what the CLI calls. With one worker it serves in this process on
uvloop. With more, this process becomes a supervisor (:mod:`proxy.supervisor`) that
starts N worker processes, each binding the same port with SO_REUSEPORT so the kernel
spreads connections across them, restarts a worker that dies, and forwards SIGTERM.

SIGTERM (or Ctrl-C): stop accepting connections, close every stream with a ``retry:``
hint so clients reconnect elsewhere, let in-flight requests finish (bounded by
``shutdown_timeout``), release everything, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import uvloop
from aiohttp import web

from crivline import logs
from crivline.errors import StartupError
from crivline.listening import listen_failure
from crivline.settings import Settings, redact_url
from proxy.app import create_app
from proxy.options import ProxyOptions

log = logging.getLogger("proxy")


def run(settings: Settings) -> int:
    logs.configure("proxy", settings.log_level)
    settings.require_redis()
    if settings.proxy_workers > 1:
        from proxy.supervisor import supervise

        return supervise(settings)
    return serve(settings)


def serve(settings: Settings, options: ProxyOptions | None = None) -> int:
    """Serve in this process until SIGTERM/SIGINT; 0 after a clean shutdown."""
    return uvloop.run(_serve(settings, options or ProxyOptions()))


async def _serve(settings: Settings, options: ProxyOptions) -> int:
    app = create_app(settings, options)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=options.shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.proxy_port, reuse_port=True, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            listen_failure(settings.host, settings.proxy_port, "CRIVLINE_PROXY_PORT", exc)
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "proxy listening",
        extra={
            "fields": {
                "url": f"http://{settings.host}:{settings.proxy_port}",
                "redis": redact_url(settings.require_redis()),
                "edge": settings.edge_id,
                "pid": os.getpid(),
            }
        },
    )
    try:
        await stop.wait()
        log.info("stopping: closing streams, finishing in-flight requests")
    finally:
        # The handlers stay until the end: a second SIGTERM (a process-group kill on top
        # of the supervisor's) must not cut the graceful shutdown short.
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("proxy stopped")
    return 0
