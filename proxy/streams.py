"""Serving one SSE stream: headers, then whatever the hub queues for the client.

The handler registers the client with the hub (which may refuse it: limits, shutdown),
queues the opening bytes (a ``retry:`` hint, then the ``put``, the missed patches or a
``refetchEvaluation``) and loops: wait for bytes, write them. The loop ends when the
hub closes the client (revocation, overflow, shutdown — after writing any farewell
bytes) or the client goes away. The connection is closed afterwards rather than kept
alive: an SSE client reconnects on a fresh one.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from crivline import httpserver
from crivline.logs import fields
from proxy import appkeys, cors
from proxy.fairness import FAIRNESS
from proxy.hub import StreamClient

log = logging.getLogger(__name__)

OPENED = web.RequestKey("stream_opened_seconds", float)


async def serve(
    request: web.Request, client: StreamClient, headers: dict[str, str], started: float
) -> web.StreamResponse:
    hub = request.app[appkeys.HUB]
    response = web.StreamResponse(status=200, headers={**httpserver.SSE_HEADERS, **headers})
    response.force_close()
    if cors.applies(request.path):
        cors.decorate(response)
    try:
        await response.prepare(request)
        request[OPENED] = time.perf_counter() - started
        transport = request.transport
        if transport is not None:
            client.abort = transport.abort
            client.alive = lambda: not transport.is_closing()
        while True:
            data = await client.next()
            if not data:
                break
            await response.write(data)
            # An idle stream waits in next() for weeks: it must not keep what it last
            # wrote (the opening put is a fresh copy of the whole flag set per client).
            del data
    except ConnectionError:  # the client went away (aiohttp: ClientConnectionResetError)
        client.close("client disconnected")
    except Exception:
        # The status line is out: all that is left is to end the stream and say why.
        log.exception("stream failed", extra=fields(path=request.path))
        client.close("error")
    finally:
        hub.release(client)
        request.app[FAIRNESS].release(client)
    return response
