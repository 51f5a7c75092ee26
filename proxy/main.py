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

import logging
import os

import uvloop

from crivline import httpserver, logs
from crivline.logs import fields
from crivline.settings import Settings, redact_url
from crivline.tasks import Tasks
from crivline.tracing import configure
from proxy import heap
from proxy.app import create_app
from proxy.options import ProxyOptions

log = logging.getLogger(__name__)


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
    def listening() -> None:
        log.info(
            "proxy listening",
            extra=fields(
                url=f"http://{settings.host}:{settings.proxy_port}",
                redis=redact_url(settings.require_redis()),
                edge=settings.edge_id,
                pid=os.getpid(),
            ),
        )

    # Each process (each worker) has its own exporter: threads do not survive a fork.
    tracing = configure("crivline-proxy", settings)
    # The garbage collector is the process's, not the app's: its policy runs here.
    tasks = Tasks("heap")
    if options.gc_freeze_seconds > 0:
        tasks.spawn(heap.run(options.gc_freeze_seconds, options.gc_thaw_seconds), "gc")
    try:
        # on_shutdown closes every stream with a retry hint before in-flight requests finish.
        await httpserver.serve(
            create_app(settings, options, tracing),
            settings.host,
            settings.proxy_port,
            shutdown_timeout=options.shutdown_timeout,
            port_variable="CRIVLINE_PROXY_PORT",
            listening=listening,
            reuse_port=True,
            backlog=2048,
        )
    finally:
        await tasks.close()
        await tracing.shutdown()
    log.info("proxy stopped")
    return 0
