"""Tunables of the proxy that are not operator settings: timings, sizes, cache bounds.

Operators configure the proxy through :class:`crivline.settings.Settings`
(``CRIVLINE_*``); these are the engineering constants behind it, gathered in one frozen
object so tests can shrink the timings (a keep-alive every 50 ms instead of 10 s)
without patching anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from crivline import httpserver


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    # -- streams --------------------------------------------------------------------------
    keepalive_seconds: float = 10.0  # a comment on every idle stream (the issue: ≤ 15 s)
    retry_ms: int = 2000  # the `retry:` hint sent when a stream opens
    shutdown_retry_ms: int = 250  # the hint sent when this process closes streams
    stream_buffer_bytes: int = 4 * 1024 * 1024  # per client, unsent; beyond it: disconnect
    ring_size: int = 64  # recent patch events kept per environment for Last-Event-ID
    expiry_sweep_seconds: float = 0.25  # how often open streams' key expiry is checked
    # -- OFREP ----------------------------------------------------------------------------
    ticket_window_seconds: int = 900  # stream tickets rotate this often, live two windows
    inactivity_delay_seconds: int = 120  # advertised `inactivityDelaySec`
    bulk_cache_bytes: int = 32 * 1024 * 1024  # LRU of evaluated bulk bodies (per process)
    refetch_wait_seconds: float = 2.0  # waiting for a version named by flagConfigEtag
    max_context_depth: int = 16  # nesting of objects/arrays in an evaluation context
    max_context_nodes: int = 10_000  # values in an evaluation context
    # -- keys -----------------------------------------------------------------------------
    negative_key_ttl: float = 5.0  # unknown keys are refused without Redis this long
    negative_key_capacity: int = 100_000
    key_miss_budget: float = 50.0  # unknown-key lookups per second that may reach Redis
    # -- Redis and background loops ---------------------------------------------------------
    redis_timeout: float = 2.0  # connect and command timeout
    health_interval: float = 1.0  # syncd heartbeat / sync state polling
    resync_interval: float = 30.0  # full version reconciliation with Redis, as a safety net
    # Cap of the subscriber's reconnect backoff. Short on purpose: it bounds how long a
    # process stays unsubscribed (behind) after its Redis is back, and an attempt against
    # an absent Redis is one refused connection.
    reconnect_max_seconds: float = 0.25
    rate_limit_flush_seconds: float = 0.1  # local counts pushed to the shared counters
    usage_flush_seconds: float = 1.0  # usage counts pushed to the edge Redis (metering)
    sync_fresh_seconds: float | None = None  # None: derived from the settings
    presence_seconds: float = 2.0  # what this process serves, published for `crivline status`
    state_write_seconds: float = 1.0  # CRIVLINE_STATE_DIR: at most one write this often
    metrics_publish_seconds: float = 1.0  # --workers: this process's gauges to the shared files
    gc_freeze_seconds: float = 1.0  # proxy.heap: freeze what is alive this often (0: off)
    gc_thaw_seconds: float = 600.0  # proxy.heap: a full collection of everything this often
    shutdown_timeout: float = httpserver.SHUTDOWN_SECONDS  # for in-flight requests on SIGTERM
    # -- connections (see crivline.httpserver) ------------------------------------------------
    idle_timeout_seconds: float = httpserver.IDLE_SECONDS  # no complete request: closed
    body_timeout_seconds: float = httpserver.BODY_SECONDS  # a body must arrive within (408)

    def with_(self, **changes: Any) -> ProxyOptions:
        return replace(self, **changes)
