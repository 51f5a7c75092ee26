"""The load-test harness can't rot: ``loadtests/bench.py --smoke`` on a real stack.

The smoke run is the full bench with seconds per phase: it starts its own stack
(``crivline up`` on embedded PostgreSQL and Valkey), installs the 100-flag set, runs the
throughput generator against the proxy and the baseline, the workers comparison, every
locust scenario (streams with writers, polling, ofrep, edge-day) and writes the report.
It runs as a subprocess — importing locust would patch this process with gevent — and
these tests read what it wrote. No figure is judged here: performance is the full
bench's business (``make bench``), as ratios against the same-run baseline.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LOADTESTS = REPO / "loadtests"
SCENARIOS = (
    "polling",
    "polling-writers",
    "ofrep",
    "edge-day",
    "streams-20",
    "streams-20-writers",
    "streams-workers-40-c0",
    "streams-workers-40-c1",
    "streams-workers-40-writers",
)


def _running(process: dict[str, int]) -> bool:
    """Whether the process the bench recorded (pid + start time) still exists."""
    try:
        raw = Path(f"/proc/{process['pid']}/stat").read_text()
    except OSError:
        return False
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0] != "Z" and int(fields[19]) == process["start"]


def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run a bench command; on timeout SIGTERM it (it stops what it started) and fail."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=10)
        pytest.fail(f"{cmd[1]} did not finish within {timeout}s:\n{output.decode()[-3000:]}")
    return proc.returncode, output.decode(errors="replace")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("bench") / "report"
    code, output = _run([sys.executable, str(LOADTESTS / "bench.py"), "--smoke", "--out",
                         str(out)], timeout=180)  # fmt: skip
    results_file = out / "results.json"
    assert results_file.exists(), f"no results.json; bench output:\n{output[-3000:]}"
    results: dict[str, Any] = json.loads(results_file.read_text())
    assert code == 0, f"bench exited {code} ({results.get('error')}):\n{output[-3000:]}"
    return results, out, output


@pytest.mark.timeout(240)
def test_every_scenario_ran_requests_without_a_failure(smoke: Any) -> None:
    results, _out, _output = smoke
    scenarios = results["scenarios"]
    assert set(SCENARIOS) <= set(scenarios)
    for key in SCENARIOS:
        scenario = scenarios[key]
        assert scenario["exit_code"] == 0, key
        assert scenario["requests"] > 0, key
        assert scenario["failures"] == 0, key
    kinds = {row["name"] for row in scenarios["edge-day"]["rows"]}
    # edge-day mixes every kind of client: pollers, evaluators, browsers, streams, a writer
    assert {"evaluate flag", "SSE connect"} <= kinds
    assert any(name.startswith("flags ") for name in kinds)
    assert any(name.startswith("bulk ") for name in kinds)
    assert any(name.startswith("PUT flag state") for name in kinds)


@pytest.mark.timeout(240)
def test_streams_measured_propagation_of_every_write(smoke: Any) -> None:
    results, out, _output = smoke
    phase = results["propagation"]["20"]
    writes = phase["writes"]
    assert writes > 0
    stats = phase["stream_stats"]
    assert stats["connects"] == 20
    assert stats["without_commit_time"] == 0  # every patch carries committedAt
    # each version reached all 20 streams (writes close together may share a version:
    # syncd coalesces), and every patch gave a latency sample
    assert phase["samples"] == stats["patches"]
    assert 20 <= stats["patches"] <= 20 * writes
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    assert phase["rss_open"] > 0
    lines = (out / "streams-20-latency.txt").read_text().split()
    assert len(lines) == phase["samples"]
    # every stage of a change was seen by its part's histogram during the writes
    stages = {row["stage"]: row for row in phase["stages"]}
    for stage in ("commit_to_wakeup", "wakeup_to_written", "redis_to_told", "told_to_applied",
                  "commit_to_first_write", "commit_to_last_write", "fan_out"):  # fmt: skip
        counts = {name: row["count"] for name, row in stages.items()}
        assert stages[stage]["count"] > 0, (stage, counts)
        assert stages[stage]["p99_le_ms"] is not None, stage


@pytest.mark.timeout(240)
def test_streams_on_two_workers_reached_every_client_from_both(smoke: Any) -> None:
    results, out, _output = smoke
    phase = results["streams_workers"]
    assert (phase["streams"], phase["workers"], phase["clients"]) == (40, 2, 2)
    # both workers held streams (each worker's status page, reached through its pid),
    # and together all 40
    workers = phase["per_worker"]
    assert len(workers) == 2
    assert all(w["streams_open"] > 0 for w in workers.values()), workers
    assert sum(w["streams_open"] for w in workers.values()) == 40
    # the two client processes' samples were merged: every version reached every stream
    # (a gap in a stream's versions fails its client: see the scenarios test); a worker
    # may send two versions' patches in one write, never a patch in none
    stats = phase["stream_stats"]
    assert stats["connects"] == 40
    assert stats["without_commit_time"] == 0
    assert 0 <= stats["coalesced_patches"] < stats["patches"]
    assert phase["drained"]  # every worker held the last version and had sent it
    assert phase["samples"] == stats["patches"] >= phase["patch_writes"] > 0
    assert 40 <= phase["samples"] <= phase["expected"] == 40 * phase["versions"]
    assert 0 < phase["p50_ms"] <= phase["p99_ms"] <= phase["max_ms"]
    assert phase["rss_open"] > 0
    assert phase["client_cpu_seconds"] > 0
    # the clients yield the CPU to the workers: the kernel runs them under SCHED_IDLE
    assert phase["client_scheduling"] == "idle"
    assert phase["client_policies"] == ["SCHED_IDLE"]
    # ... and their session groups are lowered too, where the kernel groups sessions
    assert phase["client_autogroup_nice"] in ([19], [None])
    assert len((out / "streams-workers-40-latency.txt").read_text().split()) == phase["samples"]
    stages = {row["stage"]: row for row in phase["stages"]}
    for stage in ("commit_to_wakeup", "redis_to_told", "fan_out", "commit_to_last_write"):
        assert stages[stage]["count"] > 0, stage
    # both workers' histograms were read: each applied at least one version
    assert stages["told_to_applied"]["count"] >= 2


@pytest.mark.timeout(240)
def test_throughput_measured_proxy_and_baseline_alike(smoke: Any) -> None:
    results, _out, _output = smoke
    cases = results["throughput"]
    assert set(cases) == {"flags-304", "flags-200", "ofrep-single", "bulk-new-context",
                          "bulk-etag"}  # fmt: skip
    for name, case in cases.items():
        assert case["errors"] == 0, name
        assert case["proxy_rps"] > 0, name
        assert case["baseline_rps"] > 0, name
        assert case["path_ok"] is not False, f"{name}: answers of the wrong size"
        assert case["runs"]["proxy"][0]["server_us_per_request"] > 0, name
    workers = results["workers"]
    assert workers["one_rps"] > 0
    assert workers["two_rps"] > 0
    metering = results["metering"]
    for name in ("flags-200", "flags-304"):
        assert metering[name]["on_rps"] > 0, name
        assert metering[name]["off_rps"] > 0, name
        assert metering[name]["ratio"] == metering[name]["on_rps"] / metering[name]["off_rps"]


@pytest.mark.timeout(240)
def test_report_written_and_every_process_stopped(smoke: Any) -> None:
    results, out, output = smoke
    report = (out / "report.md").read_text()
    assert f"report: {out / 'report.md'}" in output
    for heading in ("## Targets", "## Throughput", "## Workers", "## Metering", "## Streams",
                    "## Streams on --workers 2", "### Where the time goes",
                    "## Locust"):  # fmt: skip
        assert heading in report
    assert "| propagation p99 ≤ 500 ms with 40 streams on --workers 2" in report
    assert "40 streams, 2 workers: p50 / p99" in report
    for key in SCENARIOS:
        assert f"| {key} |" in report
    if importlib.util.find_spec("matplotlib") is not None:
        for plot in ("propagation.png", "throughput.png", "ratios.png"):
            assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    else:
        assert "matplotlib is not installed" in report
    processes = results["processes"]
    assert {"up", "postgres", "valkey", "control", "syncd", "proxy", "baseline"} <= set(processes)
    left = {name: p for name, p in processes.items() if _running(p)}
    assert not left, f"still running after the bench: {left}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_fallback_generator_against_the_baseline(tmp_path: Path) -> None:
    """hammer.py (used when wrk is absent) counts answers by status, 304s included."""
    body = tmp_path / "body.json"
    body.write_bytes(b'{"flags":{}}' * 100)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(LOADTESTS / "baseline.py"), "--port", str(port), "--body-file",
         str(body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert b"listening" in server.stdout.readline()  # it prints once it is bound
        hammer = [sys.executable, str(LOADTESTS / "hammer.py"), "--duration", "0.3",
                  "--connections", "4"]  # fmt: skip
        code, output = _run([*hammer, "--url", f"http://127.0.0.1:{port}/bytes"], 30)
        assert code == 0, output
        full = json.loads(output.splitlines()[-1])
        assert full["requests"] > 0
        assert full["statuses"] == {"200": full["requests"]}
        assert full["bytes"] > full["requests"] * 1200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/bytes", timeout=5) as answer:
            etag = answer.headers["ETag"]
        code, output = _run(
            [*hammer, "--url", f"http://127.0.0.1:{port}/bytes", "-H", f"If-None-Match: {etag}"],
            30,
        )
        assert code == 0, output
        cached = json.loads(output.splitlines()[-1])
        assert cached["statuses"] == {"304": cached["requests"]}
        assert cached["requests"] > 0
        code, output = _run(
            [*hammer, "--url", f"http://127.0.0.1:{port}/json", "--method", "POST",
             "--body", '{"context":{"targetingKey":"u{n}"}}', "--vary"],
            30,
        )  # fmt: skip
        assert code == 0, output
        posted = json.loads(output.splitlines()[-1])
        assert posted["statuses"] == {"200": posted["requests"]}
        assert posted["errors"] == 0
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
