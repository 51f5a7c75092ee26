"""What the quota check and metering cost per evaluation request, with the UTC day read
from the clock once per request (as :func:`proxy.access.evaluation` does) against the
same two calls each reading it themselves (as the routes did before), in the same run.

``make bench-micro`` (or ``pytest -s`` on this file) prints both and their ratio; as a
test it checks that both ways decide and count the same.
"""

from __future__ import annotations

import timeit
import uuid

import pytest
from redis.asyncio import Redis

from crivline.keyspace import Keyspace
from crivline.plans import EdgePlan
from proxy.metering import Meter, today
from proxy.quota import PlanBook, Quota

pytestmark = pytest.mark.benchmark

TENANT, ENV = str(uuid.uuid4()), str(uuid.uuid4())
REQUESTS = 200_000


def _gate() -> tuple[Meter, Quota]:
    redis, keyspace = Redis(), Keyspace("bench:", "edge")  # never contacted: no flush here
    meter, plans = Meter(redis, keyspace), PlanBook(redis, keyspace)
    plans.plans[TENANT] = EdgePlan("pro", 10**15, None)  # a limit the run never reaches
    return meter, Quota(plans, meter, enforce=True)


def test_one_clock_read_per_request_costs_less_than_two() -> None:
    before_meter, before_quota = _gate()
    after_meter, after_quota = _gate()

    def before() -> None:  # each call reads the clock and works out the day
        assert before_quota.refusal(TENANT, ofrep=False) is None
        before_meter.count(ENV, "poll", TENANT)

    def after() -> None:  # the gate reads it once and hands the day to both
        day = today()
        assert after_quota.refusal(TENANT, ofrep=False, day=day) is None
        after_meter.count(ENV, "poll", TENANT, day)

    # Interleaved rounds, best of each: the machine's load falls on both alike.
    rounds = [(timeit.timeit(before, number=REQUESTS), timeit.timeit(after, number=REQUESTS))
              for _ in range(5)]  # fmt: skip
    best_before = min(b for b, _ in rounds) / REQUESTS
    best_after = min(a for _, a in rounds) / REQUESTS
    print(
        f"\nquota + metering per request: before {best_before * 1e9:.0f} ns,"
        f" after {best_after * 1e9:.0f} ns, after/before {best_after / best_before:.2f}"
    )
    # Both ways count every request once, on the same day.
    assert before_meter.unflushed() == after_meter.unflushed() == 5 * REQUESTS
    assert before_meter.used_today(TENANT, 0) == 0  # another day: nothing
    assert after_meter.used_on(TENANT, today()) == 5 * REQUESTS
