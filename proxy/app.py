"""The proxy as an aiohttp application: ``create_app(settings) -> web.Application``.

One cleanup context per resource, in dependency order (each is torn down in reverse):
the Redis connection pool; the key index; the stream hub; the environment cache; the
saved environments (state folder, ``--bootstrap``) served until Redis has them, and the
state folder's writer; the rate limiter and its flusher; the ticket signer; the pub/sub
subscriber (which loads everything and keeps it current); the health monitor and the
process's presence in Redis; the status page's sampler. Nothing touches Redis before
the app starts, and start-up does not wait for Redis (but for one bounded read of the
edge's ticket secret, so tickets other processes issued are good from the first
request): without it the proxy listens, answers ``/healthz``, reports ``/readyz`` not
ready (or degraded, serving saved environments), and catches up as soon as Redis is
there.

On shutdown the hub first closes every stream with a ``retry:`` hint (aiohttp runs
``on_shutdown`` before it waits for in-flight handlers), then the contexts unwind.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from crivline import httpserver, redisconn, wire
from crivline.keyspace import Keyspace
from crivline.settings import Settings
from crivline.snapshot_file import StoredEnvironment
from crivline.tasks import Tasks
from crivline.tracing import DISABLED, Tracing
from proxy import appkeys, fastlane, openapi
from proxy.bulkcache import BulkCache
from proxy.edge import monitor
from proxy.edge.environments import EnvironmentCache
from proxy.edge.keys import KeyIndex
from proxy.edge.presence import Presence
from proxy.edge.saved import read_saved, serve_saved
from proxy.edge.statedir import StateDir
from proxy.edge.status import EdgeStatus
from proxy.edge.subscriber import Subscriber
from proxy.edgestreams import EDGE_STREAMS, KEY_STREAMS, EdgeStreams
from proxy.errors import error_format
from proxy.fairness import FAIRNESS, Fairness
from proxy.hub import Hub
from proxy.metering import Meter
from proxy.metrics import Metrics
from proxy.middleware import edge_middleware, traced_middleware
from proxy.options import ProxyOptions
from proxy.quota import PlanBook, Quota
from proxy.ratelimit import RateLimiter
from proxy.routes import health, ofrep, sdk
from proxy.routes import status as status_page
from proxy.routes.status_sampler import sampling as status_sampling
from proxy.tickets import SharedSecret, TicketSigner


def create_app(
    settings: Settings, options: ProxyOptions | None = None, tracing: Tracing = DISABLED
) -> web.Application:
    """The proxy app. ``tracing`` is the caller's (it shuts it down); with tracing off no
    tracing code runs per request: the middleware is the plain one."""
    options = options or ProxyOptions()
    settings.require_redis()
    sampled = tracing.request_ratio > 0
    app = web.Application(
        middlewares=[traced_middleware(tracing) if sampled else edge_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args=httpserver.handler_args(options.idle_timeout_seconds),
    )
    app[appkeys.SETTINGS] = settings
    app[appkeys.OPTIONS] = options
    app[appkeys.KEYSPACE] = Keyspace(settings.key_prefix, settings.edge_id)
    app[appkeys.METRICS] = Metrics()
    app[appkeys.TRACING] = tracing
    gate = wire.Gate(
        max_connections=settings.max_connections,
        write_seconds=settings.write_timeout,
        render=error_format,
    )
    app[wire.GATE] = gate
    if not sampled:  # a traced request takes the middleware chain, span and all
        app[wire.FRONT_DOOR] = fastlane.front_door
    app[appkeys.METRICS].bind_gate(gate)
    fresh = options.sync_fresh_seconds or max(
        3 * settings.reconcile_interval, settings.heartbeat_ttl
    )
    app[appkeys.STATUS] = EdgeStatus(fresh_seconds=fresh)
    app[appkeys.BULK_CACHE] = BulkCache(options.bulk_cache_bytes)
    app[appkeys.STREAM_LINKS] = {}
    app[SAVED] = read_saved(settings)  # a bootstrap file that cannot be read stops here
    app.cleanup_ctx.extend(
        [
            _redis,
            _keys,
            _hub,
            _cache,
            _saved,
            _limiter,
            _meter,
            _tickets,
            _subscriber,
            _health,
            _shared_metrics,
            status_sampling,
        ]
    )
    status_page.setup(app)
    app.on_shutdown.append(_close_streams)
    for table in (sdk.routes, ofrep.routes, health.routes, status_page.routes, openapi.routes):
        httpserver.add_routes(app, table)
    httpserver.refuse_unmatched(app)
    return app


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings, options = app[appkeys.SETTINGS], app[appkeys.OPTIONS]
    client: Redis = redisconn.edge_client(
        settings,
        socket_connect_timeout=options.redis_timeout,
        socket_timeout=options.redis_timeout,
        # Fail fast: the proxy serves from memory and retries on its own schedule.
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        max_connections=settings.redis_max_connections,
    )
    app[appkeys.REDIS] = client
    yield
    await client.aclose()


async def _keys(app: web.Application) -> AsyncIterator[None]:
    options = app[appkeys.OPTIONS]
    keys = KeyIndex(
        app[appkeys.REDIS],
        app[appkeys.KEYSPACE],
        negative_ttl=options.negative_key_ttl,
        negative_capacity=options.negative_key_capacity,
        miss_budget=options.key_miss_budget,
    )
    app[appkeys.KEYS] = keys
    yield
    await keys.close()


async def _hub(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    hub = Hub(
        app[appkeys.METRICS],
        app[appkeys.OPTIONS],
        max_streams=settings.max_streams,
        max_streams_per_key=settings.max_streams_per_key,
        max_lifetime=settings.max_stream_seconds,
        reconnect_window=settings.stream_reconnect_window,
        crowded=app[wire.GATE].crowded,
        elsewhere=lambda key_hash: _key_streams_elsewhere(app, key_hash),
    )
    hub.start()
    app[appkeys.HUB] = hub
    app[FAIRNESS] = Fairness(
        hub,
        app[appkeys.METRICS],
        max_streams_per_tenant=settings.max_streams_per_tenant,
        max_streams_per_environment=settings.max_streams_per_environment,
        evaluation_share=settings.tenant_evaluation_share,
    )
    yield
    await hub.shutdown()


def _key_streams_elsewhere(app: web.Application, key_hash: str) -> int:
    """Streams of this key the edge's other processes held open at their last report."""
    counter = app.get(KEY_STREAMS)
    return counter.others.get(key_hash, 0) if counter is not None else 0


async def _close_streams(app: web.Application) -> None:
    await app[appkeys.HUB].shutdown()


async def _cache(app: web.Application) -> AsyncIterator[None]:
    cache = EnvironmentCache(
        app[appkeys.REDIS],
        app[appkeys.KEYSPACE],
        keys=app[appkeys.KEYS],
        hub=app[appkeys.HUB],
        metrics=app[appkeys.METRICS],
        status=app[appkeys.STATUS],
        options=app[appkeys.OPTIONS],
        tracing=app[appkeys.TRACING],
    )
    app[appkeys.CACHE] = cache
    yield
    await cache.close()


SAVED = web.AppKey("saved", list[StoredEnvironment])
STATE_DIR = web.AppKey("state_dir", StateDir)


async def _saved(app: web.Application) -> AsyncIterator[None]:
    """Serve the saved environments until Redis has them; keep the state folder."""
    cache, keys = app[appkeys.CACHE], app[appkeys.KEYS]
    saved = app[SAVED]
    serve_saved(saved, cache, keys, app[appkeys.STATUS])
    saved.clear()  # served: the cache holds them now
    folder = app[appkeys.SETTINGS].state_dir
    if folder is None:
        yield
        return
    state_dir = StateDir(folder, keys.keys_of, every=app[appkeys.OPTIONS].state_write_seconds)
    state_dir.prepare()
    app[STATE_DIR] = state_dir
    cache.on_applied, cache.on_removed = state_dir.applied, state_dir.removed
    state_dir.start()
    yield
    cache.on_applied = cache.on_removed = None
    await state_dir.close()


async def _limiter(app: web.Application) -> AsyncIterator[None]:
    limiter = RateLimiter(
        app[appkeys.REDIS], app[appkeys.KEYSPACE], app[appkeys.SETTINGS].rate_limit_per_second
    )
    app[appkeys.LIMITER] = limiter
    tasks = Tasks("ratelimit")
    if limiter.limit > 0:
        tasks.spawn(limiter.run(app[appkeys.OPTIONS].rate_limit_flush_seconds), "flush")
    yield
    await tasks.close()


async def _meter(app: web.Application) -> AsyncIterator[None]:
    settings, interval = app[appkeys.SETTINGS], app[appkeys.OPTIONS].usage_flush_seconds
    on = settings.metering  # off only to measure what metering and plans cost
    meter = Meter(app[appkeys.REDIS], app[appkeys.KEYSPACE], enabled=on)
    plans = PlanBook(app[appkeys.REDIS], app[appkeys.KEYSPACE])
    app[appkeys.METER], app[appkeys.PLANS] = meter, plans
    app[appkeys.QUOTA] = Quota(plans, meter, enforce=on and settings.quotas)
    edge_streams = EdgeStreams(
        app[appkeys.REDIS], app[appkeys.KEYSPACE].edge_streams, plans,
        enforce=on and settings.quotas,
    )  # fmt: skip
    app[EDGE_STREAMS] = edge_streams
    key_streams = EdgeStreams(
        app[appkeys.REDIS], app[appkeys.KEYSPACE].edge_key_streams, plans, enforce=False
    )
    app[KEY_STREAMS] = key_streams
    tasks = Tasks("metering")
    tasks.spawn(key_streams.run(interval), "key-streams")  # the per-key limit, always
    if on:
        tasks.spawn(meter.run(interval), "flush")
        tasks.spawn(plans.run(interval), "plans")
        tasks.spawn(edge_streams.run(interval), "streams")
    yield
    await tasks.close()
    await meter.close(app[appkeys.OPTIONS].redis_timeout)
    await edge_streams.close(app[appkeys.OPTIONS].redis_timeout)
    await key_streams.close(app[appkeys.OPTIONS].redis_timeout)


async def _tickets(app: web.Application) -> AsyncIterator[None]:
    signer = TicketSigner(app[appkeys.OPTIONS].ticket_window_seconds)
    configured = app[appkeys.SETTINGS].ticket_secret
    previous = app[appkeys.SETTINGS].ticket_secret_previous
    if previous is not None:  # rotation: accepted, never signed with
        signer.use_secret(previous.reveal().encode())
    if configured is not None:
        signer.use_secret(configured.reveal().encode())
    app[appkeys.TICKETS] = signer
    shared = SharedSecret(app[appkeys.REDIS], app[appkeys.KEYSPACE], signer)
    app[appkeys.TICKET_SECRET] = shared
    if configured is None:
        await shared.ensure(app[appkeys.OPTIONS].redis_timeout)
    yield
    await shared.close()


async def _subscriber(app: web.Application) -> AsyncIterator[None]:
    redis, ks = app[appkeys.REDIS], app[appkeys.KEYSPACE]
    shared_secret = app[appkeys.SETTINGS].ticket_secret is None
    secret = app[appkeys.TICKET_SECRET]

    async def on_connected() -> None:
        if shared_secret:
            await secret.adopt()

    subscriber = Subscriber(
        redis,
        ks,
        cache=app[appkeys.CACHE],
        keys=app[appkeys.KEYS],
        status=app[appkeys.STATUS],
        options=app[appkeys.OPTIONS],
        on_connected=on_connected,
    )
    app[appkeys.SUBSCRIBER] = subscriber
    subscriber.start()
    yield
    await subscriber.close()


async def _shared_metrics(app: web.Application) -> AsyncIterator[None]:
    """Under ``--workers``: what only this process can read reaches the workers' shared
    files every ``metrics_publish_seconds``, and once more when it stops."""
    metrics = app[appkeys.METRICS]
    tasks = Tasks("metrics")
    if metrics.shared:
        tasks.spawn(_publishing(metrics, app[appkeys.OPTIONS].metrics_publish_seconds), "publish")
    yield
    await tasks.close()
    metrics.publish()


async def _publishing(metrics: Metrics, every: float) -> None:
    while True:
        metrics.publish()
        await asyncio.sleep(every)


async def _health(app: web.Application) -> AsyncIterator[None]:
    status, cache = app[appkeys.STATUS], app[appkeys.CACHE]

    def snapshot_age() -> float:
        at = status.reconciled_at
        return time.time() - at if at is not None else math.nan

    presence = Presence(
        app[appkeys.REDIS],
        app[appkeys.KEYSPACE].proxies,
        lambda: ((state.id, state.version) for state in cache.states()),
        lambda: status.verdict(time.time()),
        interval=app[appkeys.OPTIONS].presence_seconds,
    )
    app[appkeys.METRICS].bind_gauges(
        environments=lambda: float(len(cache)),
        snapshot_age=snapshot_age,
        stale=lambda: float(status.stale_seconds() or 0),
        redis_up=lambda: 1.0 if status.redis_up else 0.0,
    )
    tasks = Tasks("health")
    tasks.spawn(monitor.monitor(app), "monitor")
    tasks.spawn(presence.run(), "presence")
    yield
    await tasks.close()
    await presence.close(app[appkeys.OPTIONS].redis_timeout)
