"""One log line per request answered by the control API (logger ``control.access``).

It names the method, the path (never the query string or a header, so no token and no
secret reaches the log), the status, the time taken and, once authenticated, the actor
(the token's display prefix and label, as audit rows name it).
"""

from __future__ import annotations

import logging

from aiohttp import web

from control.state import PRINCIPAL
from crivline.logs import fields

log = logging.getLogger("control.access")


def record(request: web.Request, status: int, seconds: float) -> None:
    """The access line of one answered request (called by the metrics middleware, which
    times every answer already)."""
    principal = request.get(PRINCIPAL)
    log.info(
        "request",
        extra=fields(
            method=request.method,
            path=request.rel_url.path,
            status=status,
            ms=round(seconds * 1000, 1),
            actor=principal.actor if principal is not None else None,
        ),
    )
