"""One log line per request answered by the control API (logger ``control.access``).

It names the method, the path (never the query string or a header, so no token and no
secret reaches the log), the status, the time taken and, once authenticated, the actor
(the token's display prefix and label, as audit rows name it).
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from control.problems import Handler
from control.state import PRINCIPAL
from crivline.logs import fields

log = logging.getLogger("control.access")


def access_log_middleware() -> Middleware:
    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            principal = request.get(PRINCIPAL)
            log.info(
                "request",
                extra=fields(
                    method=request.method,
                    path=request.rel_url.path,
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                    actor=principal.actor if principal is not None else None,
                ),
            )

    return access
