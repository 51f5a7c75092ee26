"""The fleet simulation can't rot: ``loadtests/fleet.py --smoke`` on real servers.

Three bus-only edges on a streaming standby, a relay, a bus and control, a few seconds
of writes. Run as a subprocess (it starts and stops its own servers); this test reads the
report it wrote. Correctness is judged — every write reached every edge, no edge holds a
connection to the primary — performance is not (that is ``make bench-fleet``'s report).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_fleet_smoke_converges_without_touching_the_primary(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    done = subprocess.run(
        [sys.executable, str(REPO / "loadtests" / "fleet.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    latency = results["commit_to_edge_redis_ms"]
    assert results["writes"] > 0
    assert latency["samples"] == results["writes"] * results["edges"]
    assert latency["never_arrived"] == 0
    primary = results["connections_max"]["primary"]
    standby = results["connections_max"]["standby"]
    assert not any(who.startswith("crivline-syncd") for who in primary), primary
    assert standby.get("crivline-syncd", 0) >= 1, standby
    assert primary.get("crivline-relay") == 1, primary
    assert results["bus_distinct_versions_per_second"] > 0
    assert (out / "report.md").read_text().startswith("# Fleet simulation")
