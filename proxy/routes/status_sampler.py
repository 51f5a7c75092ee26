"""What the status page's rates and chart need, sampled while it is on.

:class:`StatusSampler` records every :data:`SAMPLE_SECONDS` (and whenever the page asks)
the traffic totals, and each new version of an environment this process already held.
Figures are per process: with ``--workers N`` each worker reports its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from aiohttp import web

from crivline.tasks import Tasks
from proxy import appkeys
from proxy.edge.environments import EnvironmentCache
from proxy.metrics import Metrics

SAMPLE_SECONDS = 1.0  # how often traffic totals are recorded for the rates
RATE_WINDOW = 10.0  # rates are averaged over this many seconds
HISTORY = 120  # samples kept (two minutes at one a second)
CHANGES_KEPT = 40  # propagation points kept for the chart
OPERATOR_ROUTES = frozenset(
    {"healthz", "readyz", "metrics", "openapi", "status", "status_data", "status_sign_in"}
)


@dataclass(frozen=True, slots=True)
class Totals:
    requests: float = 0.0
    client_errors: float = 0.0  # 4xx
    server_errors: float = 0.0  # 5xx


@dataclass(frozen=True, slots=True)
class Change:
    at: float  # when this process held the new version
    environment: str
    version: int
    seconds: float  # from the commit in Postgres


def client_traffic(metrics: Metrics) -> dict[str, Totals]:
    """Totals per route since the process started, operator routes left out."""
    per_route: dict[str, list[float]] = {}
    for (route, _method, status), count in metrics.requests.values.items():
        if route in OPERATOR_ROUTES:
            continue
        row = per_route.setdefault(route, [0.0, 0.0, 0.0])
        row[0] += count
        if status.startswith("4"):
            row[1] += count
        elif status.startswith("5"):
            row[2] += count
    return {route: Totals(*row) for route, row in per_route.items()}


def sum_totals(totals: Mapping[str, Totals]) -> Totals:
    return Totals(
        sum(t.requests for t in totals.values()),
        sum(t.client_errors for t in totals.values()),
        sum(t.server_errors for t in totals.values()),
    )


def lag_totals(metrics: Metrics) -> tuple[float, float]:
    """(count, sum) of the propagation lag histogram, as ``/metrics`` shows them."""
    count = total = 0.0
    for family in metrics.propagation_lag.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


class StatusSampler:
    """Traffic totals over time (for rates) and recent changes (for the chart)."""

    def __init__(self, metrics: Metrics, cache: EnvironmentCache) -> None:
        self._metrics = metrics
        self._cache = cache
        self.samples: deque[tuple[float, Totals]] = deque(maxlen=HISTORY)
        self.changes: deque[Change] = deque(maxlen=CHANGES_KEPT)
        self._versions: dict[str, int] = {}
        self.started = time.time()

    def tick(self, now: float) -> None:
        self.samples.append((now, sum_totals(client_traffic(self._metrics))))
        self.observe_changes()

    def observe_changes(self) -> None:
        """Record each environment that moved to a newer version since the last look.

        An environment seen for the first time (start-up, a cold load, a new environment)
        is no change: its commit may be arbitrarily old. So the chart shows the changes
        this process applied after it first saw the environment (within a second of
        loading it); the histogram's totals count every one."""
        seen: dict[str, int] = {}
        for state in self._cache.states():
            before = self._versions.get(state.id)
            if before is not None and state.version > before and state.committed_at:
                lag = max(0.0, state.loaded_at - state.committed_at)
                self.changes.append(Change(state.loaded_at, state.id, state.version, lag))
            seen[state.id] = state.version
        self._versions = seen

    def rates(self, now: float, current: Totals) -> dict[str, float]:
        """Per second over the last :data:`RATE_WINDOW` seconds (or since the first sample)."""
        base: tuple[float, Totals] | None = None
        for at, totals in self.samples:
            if now - at <= RATE_WINDOW + SAMPLE_SECONDS / 2:
                base = (at, totals)
                break
        if base is None or now - base[0] < 0.5:
            return {"requests": 0.0, "clientErrors": 0.0, "serverErrors": 0.0, "seconds": 0.0}
        at, old = base
        span = now - at
        return {
            "requests": round((current.requests - old.requests) / span, 3),
            "clientErrors": round((current.client_errors - old.client_errors) / span, 3),
            "serverErrors": round((current.server_errors - old.server_errors) / span, 3),
            "seconds": round(span, 1),
        }

    def series(self) -> list[list[float]]:
        """``[time, requests/s, errors/s]`` between consecutive samples (errors: 4xx + 5xx)."""
        out: list[list[float]] = []
        previous: tuple[float, Totals] | None = None
        for at, totals in self.samples:
            if previous is not None and at > previous[0]:
                span = at - previous[0]
                old = previous[1]
                errors = (
                    totals.client_errors
                    + totals.server_errors
                    - old.client_errors
                    - old.server_errors
                )
                out.append(
                    [
                        round(at, 3),
                        round((totals.requests - old.requests) / span, 3),
                        round(errors / span, 3),
                    ]
                )
            previous = (at, totals)
        return out


SAMPLER = web.AppKey("status_sampler", StatusSampler)


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the sampler's task, only while the status page is on."""
    if app[appkeys.SETTINGS].operator_token is None:
        yield
        return
    sampler = StatusSampler(app[appkeys.METRICS], app[appkeys.CACHE])
    app[SAMPLER] = sampler
    tasks = Tasks("status")

    async def run() -> None:
        while True:
            sampler.tick(time.time())
            await asyncio.sleep(SAMPLE_SECONDS)

    tasks.spawn(run(), "sampler")
    yield
    await tasks.close()
