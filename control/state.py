"""Typed keys for what the control app keeps on its ``web.Application`` and requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from crivline.settings import Settings
from crivline.tracing import Tracing

if TYPE_CHECKING:
    from control.auth import Principal
    from control.bus import Bus
    from control.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
BUS: web.AppKey[Bus] = web.AppKey("bus")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
OPENAPI = web.AppKey("openapi", bytes)  # the serialized /openapi.json
TRACING = web.AppKey("tracing", Tracing)

# Set on each authenticated /api/v1 request by the auth middleware.
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
