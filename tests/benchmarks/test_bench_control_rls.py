"""What row-level security costs control's write path (``make bench-micro``).

One run, one database, two control apps side by side, writes alternated in rounds:

- baseline: control as it was before the roles — connected as the owner (a superuser
  here, so no policy is evaluated) and without the per-transaction tenant setting;
- setting: the same owner connection with the tenant setting (its round trip alone);
- guarded: control as shipped — its own role, ``set_config('crivline.tenant_id', …)``
  first in every transaction, every statement under the RLS policies.

Each write is a real ``PUT …/flags/{flag}/environments/{env}`` over HTTP (one
transaction: the state, its audit row, the version bump). The figures are the ratios of
the medians to the baseline's; it is printed, not asserted (a loaded machine moves
both sides alike). With ``--benchmark-disable`` (``make test``) it runs a few rounds,
as a test that the two paths work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from support.control_testkit import Control, control_settings, start_control

from control import tx

pytestmark = pytest.mark.benchmark

PATH = "/projects/shop/flags/checkout/environments/prod"


async def _no_tenant(_conn: asyncpg.Connection, _tenant_id: str) -> None:
    return None


@pytest.fixture
async def pair(database_url: str, db: asyncpg.Connection) -> AsyncIterator[tuple[Control, Control]]:
    guarded = await start_control(control_settings(database_url), db, "acme")
    baseline = await start_control(
        control_settings(database_url, control_database_url=database_url), db, "globex"
    )
    try:
        for running in (guarded, baseline):
            await running.project()
            await running.flag()
        yield baseline, guarded
    finally:
        await guarded.client.close()
        await baseline.client.close()


async def _timed(write: Callable[[], Awaitable[int]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        status = await write()
        out.append(time.perf_counter() - started)
        assert status == 200
    return out


async def test_rls_cost_on_the_write_path(
    pair: tuple[Control, Control], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    baseline, guarded = pair
    options = request.config.option
    quick = options.benchmark_disable and not options.benchmark_enable
    rounds, per_round = (2, 3) if quick else (10, 40)
    states = ("ENABLED", "DISABLED")

    def writer(control: Control) -> Callable[[], Awaitable[int]]:
        turn = iter(range(10**9))

        async def write() -> int:
            state = states[next(turn) % 2]
            return (await control.put(PATH, {"state": state, "defaultVariant": "on"})).status

        return write

    samples: dict[str, list[float]] = {"baseline": [], "setting": [], "guarded": []}
    for _ in range(rounds):
        with monkeypatch.context() as patched:
            patched.setattr(tx, "bind_tenant", _no_tenant)
            samples["baseline"] += await _timed(writer(baseline), per_round)
        # The owner with the tenant setting: its round trip alone, no policy evaluated.
        samples["setting"] += await _timed(writer(baseline), per_round)
        samples["guarded"] += await _timed(writer(guarded), per_round)
    base = statistics.median(samples["baseline"])
    setting = statistics.median(samples["setting"])
    rls = statistics.median(samples["guarded"])
    print(
        f"\ncontrol write path, {len(samples['guarded'])} writes each, medians:"
        f" baseline {base * 1000:.2f} ms; + tenant setting {setting * 1000:.2f} ms"
        f" (ratio {setting / base:.3f}); + role and RLS policies {rls * 1000:.2f} ms"
        f" (ratio {rls / base:.3f})"
    )
