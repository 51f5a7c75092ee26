"""The pure parts of the workers' shared ``/metrics`` (proxy.sharedmetrics)."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from proxy.metrics import GAUGE_MODES, Metrics
from proxy.sharedmetrics import Reading, counter_step, gauge_value, readings


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
