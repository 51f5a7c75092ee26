"""The pure parts of the workers' shared ``/metrics`` (proxy.sharedmetrics)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proxy.metrics import GAUGE_MODES, Metrics
from proxy.sharedmetrics import Reading, counter_step, gauge_value, readings, row_steps


def test_readings_keep_counter_totals_and_gauges_with_their_labels_in_order() -> None:
    counter = CounterMetricFamily("c", "a counter", labels=["route", "status"])
    counter.add_metric(["flags", "200"], 3.0, created=12.0)
    gauge = GaugeMetricFamily("g", "a gauge", labels=["kind"])
    gauge.add_metric(["sdk"], 2.0)
    info = InfoMetricFamily("python", "the interpreter", value={"version": "3.12"})
    assert readings([counter, gauge, info]) == [
        Reading("counter", "c", "a counter", ("route", "status"), ("flags", "200"), 3.0),
        Reading("gauge", "g", "a gauge", ("kind",), ("sdk",), 2.0),
    ]


def test_readings_of_a_library_counter_leave_out_its_created_sample() -> None:
    registry = CollectorRegistry()
    Counter("hits", "hits", registry=registry).inc(4)
    assert readings(registry.collect()) == [Reading("counter", "hits", "hits", (), (), 4.0)]


def test_a_copied_counter_grows_by_what_its_source_grew_and_never_goes_back() -> None:
    assert counter_step(0.0, 5.0) == 5.0
    assert counter_step(5.0, 5.0) == 0.0
    assert counter_step(5.0, 7.5) == 2.5
    # a source that restarted from zero: its new count is added, the total keeps growing
    assert counter_step(7.5, 2.0) == 2.0


def test_a_livemax_gauge_writes_never_as_the_worst_value_and_the_others_as_they_are() -> None:
    assert gauge_value("livemax", math.nan) == math.inf
    assert gauge_value("livemax", 3.0) == 3.0
    assert math.isnan(gauge_value("livesum", math.nan))


def test_every_gauge_the_proxy_declares_has_its_merge_mode() -> None:
    metrics = Metrics(shared_dir=None)
    declared = {
        family.name
        for family in metrics.registry.collect()
        if family.type == "gauge" and family.name.startswith("crivline_proxy_")
    }
    assert declared <= set(GAUGE_MODES)
    assert not metrics.shared


def test_a_single_process_renders_its_own_registry_as_before() -> None:
    metrics = Metrics(shared_dir=None)
    metrics.observe_request("sdk_flags", "GET", 200, 0.001)
    assert (
        metrics.registry.get_sample_value(
            "crivline_proxy_requests_total",
            {"route": "sdk_flags", "method": "GET", "status": "200"},
        )
        == 1.0
    )
    assert b'crivline_proxy_requests_total{method="GET",route="sdk_flags",status="200"} 1.0' in (
        metrics.render()
    )


def test_row_steps_catch_every_cell_up() -> None:
    assert row_steps([1.0, 0.0, 0.5], [3.0, 0.0, 0.75]) == [2.0, 0.0, 0.25]


@pytest.fixture
def worker_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """prometheus_client's values as a worker of ``--workers`` has them: in files."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    yield str(tmp_path)
    values.close_all_multiprocess_files()


def _merged(path: str, *names: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name in names
        for s in family.samples
    }


def _own(metrics: Metrics, *names: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        if family.name in names
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_a_worker_publishes_what_its_tallies_grew_and_the_files_read_as_its_registry(
    worker_values: str,
) -> None:
    metrics = Metrics(shared_dir=worker_values)
    assert metrics.shared
    names = ("crivline_proxy_requests", "crivline_proxy_request_duration_seconds")
    for seconds in (0.0001, 0.003, 0.003, 0.7, 9.0):
        metrics.observe_request("sdk_flags", "GET", 304, seconds)
    metrics.observe_request("ofrep_bulk", "POST", 200, 0.02)
    assert _merged(worker_values, *names) == {}  # nothing before the first publish
    metrics.publish()
    assert _merged(worker_values, *names) == _own(metrics, *names)
    metrics.observe_request("sdk_flags", "GET", 304, 0.0004)
    metrics.publish()
    metrics.publish()  # nothing grew: nothing added
    merged = _merged(worker_values, *names)
    assert merged == _own(metrics, *names)
    labels = (("method", "GET"), ("route", "sdk_flags"), ("status", "304"))
    assert merged[("crivline_proxy_requests_total", labels)] == 6.0
    le = (("le", "0.0005"), ("route", "sdk_flags"))
    assert merged[("crivline_proxy_request_duration_seconds_bucket", le)] == 2.0


def test_a_worker_copies_its_collectors_and_bound_gauges_at_publish(worker_values: str) -> None:
    metrics = Metrics(shared_dir=worker_values)
    opened = [3.0]
    metrics.bind_gauges(
        environments=lambda: 2.0,
        snapshot_age=lambda: math.nan,
        stale=lambda: 0.0,
        redis_up=lambda: 1.0,
    )
    metrics.add_collector(_OpenAndRefused(opened))
    metrics.publish()
    opened[0] = 1.0
    metrics.publish()
    merged = _merged(
        worker_values,
        "crivline_proxy_environments_loaded",
        "crivline_proxy_snapshot_age_seconds",
        "t_open",
        "t_refused",
    )
    assert merged == {
        ("crivline_proxy_environments_loaded", ()): 2.0,
        ("crivline_proxy_snapshot_age_seconds", ()): math.inf,
        ("t_open", ()): 1.0,
        ("t_refused_total", ()): 7.0,
    }


class _OpenAndRefused(Collector):
    def __init__(self, opened: list[float]) -> None:
        self._opened = opened

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("t_open", "open now", self._opened[0])
        yield CounterMetricFamily("t_refused", "refused so far", 7.0)
