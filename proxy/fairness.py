"""Per-tenant fairness inside one proxy process: no tenant can take it over.

A process serves every tenant from one event loop and one stream table. Two guards
keep one tenant (however many keys it has) from crowding out the others:

- **Streams**: at most ``CRIVLINE_MAX_STREAMS_PER_TENANT`` open streams per tenant and
  ``CRIVLINE_MAX_STREAMS_PER_ENVIRONMENT`` per environment in this process (SDK and
  OFREP event streams together), on top of the per-key and per-process limits the hub
  enforces. Past either: 429 with ``Retry-After``.
- **Evaluation time**: evaluation is synchronous, so a tenant cannot hold evaluations
  open, but it can keep the loop busy with expensive ones (each bounded by the
  evaluation budget of ``crivline.flags.budget``). Each tenant has a bucket of
  evaluation CPU time that refills at ``CRIVLINE_TENANT_EVALUATION_SHARE`` seconds per
  second (a share of one core) and holds one second's worth; a tenant that has spent it
  gets 429 with ``Retry-After`` until it refills, while everyone else is served as
  before. Ordinary evaluations (microseconds each) never come near it.

The budget metric (evaluations ended by the evaluation budget) is exported from here
too, as ``crivline_proxy_evaluations_over_budget_total``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from crivline.errors import TooManyRequests
from crivline.flags.budget import METER
from proxy.edge.keys import KeyInfo
from proxy.hub import Hub, StreamClient
from proxy.metrics import Metrics

T = TypeVar("T")

_BUCKET_SECONDS = 1.0  # a tenant's evaluation time bucket holds this many seconds of refill


class _BudgetCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "crivline_proxy_evaluations_over_budget",
            "Evaluations that ran out of their work budget and answered GENERAL",
        )
        family.add_metric([], float(METER.exceeded))
        yield family


class Fairness:
    def __init__(
        self,
        hub: Hub,
        metrics: Metrics,
        *,
        max_streams_per_tenant: int,
        max_streams_per_environment: int,
        evaluation_share: float,
    ) -> None:
        self._hub = hub
        self._metrics = metrics
        self._max_tenant = max_streams_per_tenant
        self._max_env = max_streams_per_environment
        self._share = evaluation_share
        self._by_tenant: dict[str, int] = {}
        self._by_env: dict[str, int] = {}
        self._owners: dict[StreamClient, tuple[str, str]] = {}
        # tenant -> [seconds of evaluation left, when last refilled]
        self._buckets: dict[str, list[float]] = {}
        metrics.add_collector(_BudgetCollector())

    # -- streams ------------------------------------------------------------------------

    def open_stream(self, info: KeyInfo, kind: str, version: int) -> StreamClient:
        """Register a stream with the hub, or refuse it with the limit it would break."""
        tenant, env = info.tenant, info.environment
        if self._by_tenant.get(tenant, 0) >= self._max_tenant:
            self._metrics.rate_limited.labels("streams_per_tenant").inc()
            raise TooManyRequests(
                f"this tenant already has {self._max_tenant} open streams on this proxy, its "
                "maximum (CRIVLINE_MAX_STREAMS_PER_TENANT); close one first",
                headers={"Retry-After": "5"},
            )
        if self._by_env.get(env, 0) >= self._max_env:
            self._metrics.rate_limited.labels("streams_per_environment").inc()
            raise TooManyRequests(
                f"this environment already has {self._max_env} open streams on this proxy, "
                "its maximum (CRIVLINE_MAX_STREAMS_PER_ENVIRONMENT); close one first",
                headers={"Retry-After": "5"},
            )
        client = self._hub.open(env, info.key_hash, kind, version, info.expires_at)
        self._owners[client] = (tenant, env)
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1
        self._by_env[env] = self._by_env.get(env, 0) + 1
        return client

    def release(self, client: StreamClient) -> None:
        """The stream ended (called once its handler is done, whatever the reason)."""
        owner = self._owners.pop(client, None)
        if owner is None:
            return
        tenant, env = owner
        _decrement(self._by_tenant, tenant)
        _decrement(self._by_env, env)

    def streams_of(self, tenant: str) -> int:
        return self._by_tenant.get(tenant, 0)

    # -- evaluation time ------------------------------------------------------------------

    def evaluate(self, tenant: str, run: Callable[[], T]) -> T:
        """``run()`` (an evaluation) on the tenant's share of the loop; 429 once spent."""
        share = self._share
        if share <= 0:
            return run()
        now = time.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = [share * _BUCKET_SECONDS, now]
        else:
            bucket[0] = min(share * _BUCKET_SECONDS, bucket[0] + (now - bucket[1]) * share)
            bucket[1] = now
        if bucket[0] <= 0:
            self._metrics.rate_limited.labels("evaluation_time_per_tenant").inc()
            wait = max(1, math.ceil(-bucket[0] / share))
            raise TooManyRequests(
                "this tenant's evaluations have used their share of this proxy's time "
                f"({share:g} s per second, CRIVLINE_TENANT_EVALUATION_SHARE); retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        started = time.perf_counter()
        try:
            return run()
        finally:
            bucket[0] -= time.perf_counter() - started
            if len(self._buckets) > 100_000:  # bounded: idle tenants' buckets are full anyway
                self._buckets.clear()


def _decrement(counts: dict[str, int], name: str) -> None:
    left = counts.get(name, 0) - 1
    if left > 0:
        counts[name] = left
    else:
        counts.pop(name, None)


FAIRNESS = web.AppKey("fairness", Fairness)
