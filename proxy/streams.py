"""Serving one SSE stream: headers, the opening bytes, then the hub writes the rest.

The handler registers the client with the hub (which may refuse it: limits, shutdown),
queues the opening bytes (a ``retry:`` hint, then the ``put``, the missed patches or a
``refetchEvaluation``), sends the headers and whatever queued through aiohttp, then
hands the socket to the hub (:meth:`proxy.hub.StreamClient.attach`), which writes every
later event to it directly, and waits until the hub closes the client (revocation,
overflow, shutdown — after writing any farewell bytes) or the client goes away. The
connection is closed afterwards rather than kept alive: an SSE client reconnects on a
fresh one.
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
        # The headers and the opening go through aiohttp (it sends buffered headers with
        # the first body write); a write may wait for the socket to drain, and what the
        # hub published meanwhile queued behind it, so repeat until nothing is left.
        while True:
            await response.write(client.take())
            if not client.has_pending():
                break
        transport = request.transport
        if transport is None or transport.is_closing():
            client.close("client disconnected")
        else:
            # No await since the last write: nothing can slip between it and this.
            chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
            client.attach(transport, chunked=chunked)
            await client.wait_closed()
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
