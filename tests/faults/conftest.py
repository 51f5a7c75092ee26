"""The fault suite's fixtures: one cluster of real processes for the module, and a report.

- ``cluster``: :func:`fault_cluster.build` — a durable Postgres, control, three edges
  (Valkey, syncd, proxy each; two proxies at edge a, two syncd at edge b, the bus at
  edge c), three tenants. Every test starts by restarting whatever an earlier test left
  dead and waiting until all is ready again.
- ``CRIVLINE_FAULT_SEED``: the seed of the randomised run (printed when it runs, and in
  every failure, for replay).
- ``CRIVLINE_SOAK_SECONDS``: run the randomised test round after round for that long
  (a manual soak; off by default).

At the end of the session the measured convergence times are printed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fault_cluster import BOUND, Cluster, build
from fault_verify import REPORT


@pytest.fixture(scope="module")
async def cluster(work_dir: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if any(os.environ.get(v) for v in ("CRIVLINE_TEST_DATABASE_URL", "CRIVLINE_TEST_REDIS_URL")):
        pytest.skip("the fault suite starts, kills and restarts its own servers")
    built = await build(work_dir / f"faults-{request.module.__name__}")
    try:
        yield built
    finally:
        await built.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("fault suite: convergence after the faults stopped")
    terminalreporter.write_line(
        f"bound: {BOUND:.1f} s (reconcile interval + 5 s) from the later of the last fault's "
        "end and the last write's answer; also shown: seconds from the last fault's end"
    )
    for m in REPORT:
        terminalreporter.write_line(
            f"{m.converged_after:5.2f} s ({m.after_heal:5.2f} s)  {m.test}: {m.storm}"
        )
