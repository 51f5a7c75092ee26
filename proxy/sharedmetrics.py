"""One ``/metrics`` for all the workers of ``crivline proxy --workers N``.

The supervisor gives its workers a private folder in ``PROMETHEUS_MULTIPROC_DIR``
(:mod:`proxy.supervisor`); prometheus_client then keeps every value of a worker in a
memory-mapped file of that folder, and any worker's scrape merges the files of all of
them (``MultiProcessCollector``). prometheus_client picks its value class when it is
imported, from the environment, so the mode is the process's: :data:`SHARED_DIR` is read
once, at import, like the library reads it, in a worker (``CRIVLINE_PROXY_WORKER``).
Otherwise (a single proxy, every in-process test) none of this runs and a process's
metrics stay in memory as before.

What the files cannot see on their own is made to reach them here:

- the hot-path tallies of :mod:`proxy.metrics` (plain dicts: counting a request costs a
  worker what it costs a single proxy) add what they grew to a file-backed counter or
  histogram (:class:`SharedTally`, :class:`SharedLatencyTally`);
- the collectors that read live objects at scrape time (the connection gate, the
  evaluation budget, ``process_*`` and ``python_gc_*``) and the gauges bound to
  functions are copied into file-backed metrics by :class:`Mirror`.

Both happen every second in every worker (``metrics_publish_seconds``), right before
the scraping worker answers, and when a worker stops: a scrape sees the other workers'
counts as of their last second, and a worker killed with SIGKILL loses at most its last
second of them. Counters are copied as increments (so they sum over every worker that
ever ran, dead ones included); gauges take the multiprocess mode their declaration
gives. The library's own counters, histograms and gauges (auth failures, rate limits,
open streams, propagation lag) write through to the files as they change.

:func:`readings`, :func:`counter_step` and :func:`row_steps` are the pure part: a
collector's families as flat, typed samples; what to add to a copy to catch up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proxy.tally import LatencyTally, Tally

# A worker of the supervisor (which sets both). A single proxy run with the variable in
# its environment renders its own registry, as it always did.
SHARED_DIR: str | None = (
    os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    if os.environ.get("CRIVLINE_PROXY_WORKER")
    else None
)

GaugeMode = Literal["livesum", "livemin", "livemax", "liveall"]


class SharedTally(Tally):
    """A :class:`Tally` whose counts reach a file-backed counter at :meth:`publish`.

    Counting is the plain dict's (no override: the hot path of a worker is a single
    proxy's); each publish adds what every label set grew since the last one.
    """

    __slots__ = ("_children", "_counter", "_published")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, doc, labels)
        # Not registered: the process's own registry reads the dict, the scrape the files.
        self._counter = Counter(name, doc, labels, registry=None)
        self._children: dict[tuple[str, ...], Counter] = {}
        self._published: dict[tuple[str, ...], float] = {}

    def publish(self) -> None:
        published = self._published
        for key, value in list(self.values.items()):
            step = counter_step(published.get(key, 0.0), value)
            if not step:
                continue
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._counter.labels(*key)
            child.inc(step)
            published[key] = value


class SharedLatencyTally(LatencyTally):
    """A :class:`LatencyTally` whose buckets and sums reach a file-backed histogram at
    :meth:`publish` (observing stays the plain list's)."""

    __slots__ = ("_children", "_histogram", "_published")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        super().__init__(name, doc, bounds)
        self._histogram = Histogram(name, doc, ["route"], buckets=bounds, registry=None)
        self._children: dict[str, Histogram] = {}
        self._published: dict[str, list[float]] = {}

    def publish(self) -> None:
        for route, row in list(self.routes.items()):
            before = self._published.get(route) or [0.0] * len(row)
            steps = row_steps(before, row)
            if not any(steps):
                continue
            child = self._children.get(route)
            if child is None:
                child = self._children[route] = self._histogram.labels(route)
            _add_to_histogram(child, steps)
            self._published[route] = list(row)


def _add_to_histogram(child: Histogram, steps: list[float]) -> None:
    """Add per-bucket counts (the last bucket +Inf) and, last in ``steps``, the sum.

    ``Histogram.observe`` takes one value at a time; a batch goes to the child's bucket
    and sum values directly: the same values ``observe`` increments, in the same order
    (its upper bounds are ours plus +Inf, and a value goes to the first bound it is not
    above, as :meth:`LatencyTally.observe`'s ``bisect_left`` puts it).
    """
    buckets = child._buckets
    for value, step in zip(buckets, steps[:-1], strict=True):
        if step:
            value.inc(step)
    if steps[-1]:
        child._sum.inc(steps[-1])


def row_steps(before: list[float], now: list[float]) -> list[float]:
    """:func:`counter_step` of every cell of a row of counts (a histogram's buckets and
    sum): what to add to cells that read ``before`` for them to read ``now``."""
    return [counter_step(b, n) for b, n in zip(before, now, strict=True)]


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of a collector, as the mirror copies it."""

    kind: Literal["counter", "gauge"]
    family: str
    doc: str
    labels: tuple[str, ...]
    values: tuple[str, ...]
    value: float


def readings(families: Iterable[Metric]) -> list[Reading]:
    """Counter totals and gauge values of ``families``; anything else is left out.

    A counter family's ``_created`` sample is not a count, and info, histogram and
    summary families have no collector here that needs copying.
    """
    out: list[Reading] = []
    for family in families:
        if family.type == "counter":
            wanted = family.name + "_total"
        elif family.type == "gauge":
            wanted = family.name
        else:
            continue
        kind: Literal["counter", "gauge"] = "counter" if family.type == "counter" else "gauge"
        for sample in family.samples:
            if sample.name != wanted:
                continue
            names = tuple(sample.labels)
            values = tuple(sample.labels[n] for n in names)
            out.append(
                Reading(kind, family.name, family.documentation, names, values, sample.value)
            )
    return out


def counter_step(published: float, value: float) -> float:
    """How much to add to a copied counter now at ``published`` for it to read ``value``.

    A source that went down (it cannot, counters only grow; a replaced object could)
    restarts the count from where it is: its new value is added.
    """
    return value - published if value >= published else value


def gauge_value(mode: GaugeMode, value: float) -> float:
    """A NaN of a ``livemax`` gauge ("never", e.g. no confirmation yet) is written as +Inf,
    the worst value, so the merge does not depend on the order it reads the files in."""
    return math.inf if mode == "livemax" and math.isnan(value) else value


class Mirror:
    """Copies per-process collectors and function gauges into the multiprocess files."""

    def __init__(self, modes: Mapping[str, GaugeMode], default: GaugeMode = "livesum") -> None:
        self._modes = modes
        self._default = default
        self._collectors: list[Collector] = []
        self._functions: list[tuple[Gauge, GaugeMode, Callable[[], float]]] = []
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._published: dict[tuple[str, tuple[str, ...]], float] = {}

    def add(self, collector: Collector) -> None:
        self._collectors.append(collector)

    def bind(self, gauge: Gauge, mode: GaugeMode, value: Callable[[], float]) -> None:
        self._functions.append((gauge, mode, value))

    def publish(self) -> None:
        for gauge, mode, value in self._functions:
            gauge.set(gauge_value(mode, float(value())))
        for collector in self._collectors:
            for reading in readings(collector.collect()):
                self._copy(reading)

    def _copy(self, reading: Reading) -> None:
        if reading.kind == "counter":
            counter = self._counters.get(reading.family)
            if counter is None:
                counter = Counter(reading.family, reading.doc, reading.labels, registry=None)
                self._counters[reading.family] = counter
            slot = (reading.family, reading.values)
            step = counter_step(self._published.get(slot, 0.0), reading.value)
            self._published[slot] = reading.value
            if step:
                (counter.labels(*reading.values) if reading.labels else counter).inc(step)
            return
        mode = self._modes.get(reading.family, self._default)
        gauge = self._gauges.get(reading.family)
        if gauge is None:
            gauge = Gauge(
                reading.family,
                reading.doc,
                reading.labels,
                registry=None,
                multiprocess_mode=mode,
            )
            self._gauges[reading.family] = gauge
        value = gauge_value(mode, reading.value)
        (gauge.labels(*reading.values) if reading.labels else gauge).set(value)


def exposition_registry(path: str) -> CollectorRegistry:
    """What a worker's ``/metrics`` renders: the merged files of every worker."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return registry
