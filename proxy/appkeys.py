"""The typed application keys: one per resource a handler or a cleanup context needs."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.tracing import Tracing
from proxy.bulkcache import BulkCache
from proxy.edge.environments import EnvironmentCache
from proxy.edge.keys import KeyIndex
from proxy.edge.status import EdgeStatus
from proxy.edge.subscriber import Subscriber
from proxy.hub import Hub
from proxy.metering import Meter
from proxy.metrics import METRICS_KEY
from proxy.options import ProxyOptions
from proxy.quota import PlanBook, Quota
from proxy.ratelimit import RateLimiter
from proxy.tickets import SharedSecret, TicketSigner

SETTINGS = web.AppKey("settings", Settings)
OPTIONS = web.AppKey("options", ProxyOptions)
KEYSPACE = web.AppKey("keyspace", Keyspace)
METRICS = METRICS_KEY
STATUS = web.AppKey("status", EdgeStatus)
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("keys", KeyIndex)
HUB = web.AppKey("hub", Hub)
CACHE = web.AppKey("cache", EnvironmentCache)
LIMITER = web.AppKey("limiter", RateLimiter)
METER = web.AppKey("meter", Meter)
PLANS = web.AppKey("plans", PlanBook)
QUOTA = web.AppKey("quota", Quota)
TICKETS = web.AppKey("tickets", TicketSigner)
TICKET_SECRET = web.AppKey("ticket_secret", SharedSecret)
SUBSCRIBER = web.AppKey("subscriber", Subscriber)
BULK_CACHE = web.AppKey("bulk_cache", BulkCache)
TRACING = web.AppKey("tracing", Tracing)
STREAM_LINKS = web.AppKey("stream_links", dict[tuple[str, str, int, int, str], bytes])
